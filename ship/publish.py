"""`farm publish`: an export uploaded to the Hugging Face Hub with
huggingface_hub's own `create_repo` and `upload_folder`, and recorded.

The token is huggingface_hub's: HF_TOKEN or the saved login (`hf auth login`).
The farm passes it through and never stores, prints or logs it; an error that
would quote it is redacted. A publish is recorded (`Publication`) only after
the Hub returned the commit, so a failed upload leaves no trace of success.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, col, select

from jobs.db import Publication

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class PublishFailed(Exception):
    """The upload did not happen; the message is one line and holds no secret."""


@dataclass(frozen=True)
class Published:
    repo: str
    revision: str
    url: str


def valid_repo(repo: str) -> bool:
    return bool(REPO_ID.match(repo)) and len(repo) <= 96


def hub_token() -> str | None:
    """HF_TOKEN, else the token a `hf auth login` saved; None without either."""
    from huggingface_hub import get_token

    return get_token()


def one_line(exc: BaseException, token: str | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if token:
        text = text.replace(token, "***")
    return f"{type(exc).__name__}: {text[:300]}"


def upload(folder: Path, repo: str, private: bool, token: str, message: str) -> Published:
    """create_repo (kept if it exists) and upload_folder; `PublishFailed` on any error."""
    from huggingface_hub import HfApi, constants

    api = HfApi(token=token)
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo, folder_path=folder, commit_message=message, repo_type="model"
        )
    except Exception as exc:  # network, HTTP, auth: all end the same way, in one line
        raise PublishFailed(
            f"cannot publish to the Hugging Face Hub at {constants.ENDPOINT} "
            f"({one_line(exc, token)}); nothing was published"
        ) from None
    return Published(repo, str(info.oid), str(info.commit_url))


def record_publication(
    session: Session, run_id: int, variant: str, published: Published, private: bool
) -> Publication:
    """The row `farm publish` writes once the Hub accepted the upload."""
    row = Publication(run_id=run_id, variant=variant, repo=published.repo,
                      revision=published.revision, url=published.url, private=private)  # fmt: skip
    session.add(row)
    session.flush()
    return row


def publications(session: Session, run_id: int) -> list[Publication]:
    """A run's publications, newest first (the run page lists them)."""
    return list(
        session.exec(
            select(Publication)
            .where(Publication.run_id == run_id)
            .order_by(col(Publication.published_at).desc())
        )
    )
