"""A publish is recorded through the function `farm publish` calls once the Hub
accepted the upload (the real Hub is out of reach here), and the run page shows it."""

from __future__ import annotations

from sqlmodel import select

from jobs.db import Publication, session_scope
from ship.publish import Published, publications, record_publication
from tests.support.web import RUN, open_page


def test_a_recorded_publish_is_listed_on_the_run_page(finished_run: int) -> None:
    url = "https://huggingface.co/someone/quick-lora/commit/0123456789ab"
    published = Published("someone/quick-lora", "0123456789abcdef" * 2 + "01234567", url)
    with session_scope() as session:
        row = record_publication(session, finished_run, "q8", published, private=True)
        assert row.id is not None
    with session_scope() as session:
        stored = session.exec(select(Publication)).one()
        assert (stored.run_id, stored.variant, stored.repo, stored.private) == (
            finished_run, "q8", "someone/quick-lora", True)  # fmt: skip
        assert stored.revision == published.revision and stored.published_at is not None
        assert [p.id for p in publications(session, finished_run)] == [stored.id]
    at = open_page(RUN, run=str(finished_run))
    frames = [d.value for d in at.dataframe if "repo" in d.value.columns]
    assert len(frames) == 1
    assert list(frames[0]["repo"]) == ["someone/quick-lora"]
    assert list(frames[0]["revision"]) == [published.revision]


def test_the_run_page_has_no_published_table_before_a_publish(finished_run: int) -> None:
    at = open_page(RUN, run=str(finished_run))
    assert not [d for d in at.dataframe if "repo" in d.value.columns]
    assert "Published" not in [h.value for h in at.subheader]
