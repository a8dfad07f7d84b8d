"""Names are matched whole: a trailing newline (which `$` lets through) or any
other character after a valid prefix is refused."""

from __future__ import annotations

import pytest

from jobs.experiment_spec import parse_spec
from jobs.experiment_spec.files import looks_like_hf_id
from jobs.problems import InputError

SPEC = """\
name: {name}
base_model: org/model
dataset: data/datasets/code_mode
seeds: [1]
train: {{}}
eval: {{suite: data/evals/code_mode.yaml}}
"""


@pytest.mark.parametrize("name", ['"demo\\n"', '"demo\\nrm -rf"', '"ok name"'])
def test_an_experiment_name_must_match_whole(name: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_spec(SPEC.format(name=name), source="spec.yaml", check_files=False)
    [problem] = [p for p in refused.value.problems if p.field == "name"]
    assert "may only contain letters, digits" in problem.message, refused.value


def test_a_plain_name_passes() -> None:
    spec = parse_spec(SPEC.format(name="code-mode_r8.v2"), source="spec.yaml", check_files=False)
    assert spec.name == "code-mode_r8.v2"


def test_a_hugging_face_id_must_match_whole() -> None:
    assert looks_like_hf_id("mlx-community/Qwen3-0.6B-4bit")
    assert not looks_like_hf_id("mlx-community/Qwen3-0.6B-4bit\n")
    assert not looks_like_hf_id("org/name/extra")
