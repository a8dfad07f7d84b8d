"""The ring backend's hostfile and each rank's environment (worker/ring.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.ring import hostfile_text, rank_environment, write_hostfile


def test_the_hostfile_lists_one_address_per_rank_in_rank_order(tmp_path: Path) -> None:
    path = write_hostfile(tmp_path / "hosts.json", [("10.0.0.2", 5000), ("10.0.0.3", 5001)])
    assert json.loads(path.read_text()) == [["10.0.0.2:5000"], ["10.0.0.3:5001"]]
    assert json.loads(hostfile_text([("::1", 6000)])) == [["::1:6000"]]


@pytest.mark.parametrize("address", [("mac-studio.local", 5000), ("10.0.0.2", 0),
                                     ("10.0.0.2", 70000)])  # fmt: skip
def test_a_host_name_or_a_bad_port_is_refused_before_any_rank_starts(
    address: tuple[str, int],
) -> None:
    with pytest.raises(ValueError):
        hostfile_text([("10.0.0.1", 5000), address])


def test_each_rank_gets_its_rank_and_the_hostfile(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.json"
    assert rank_environment(1, 2, hosts) == {"MLX_RANK": "1", "MLX_HOSTFILE": str(hosts)}
    assert rank_environment(0, 1, None) == {}
    with pytest.raises(ValueError):
        rank_environment(2, 2, hosts)
    with pytest.raises(ValueError):
        rank_environment(0, 2, None)
