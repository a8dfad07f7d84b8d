"""Data-parallel training on MLX's ring backend, ranks started the farm's way
(`MLX_RANK`, `MLX_HOSTFILE`, no SSH) on loopback, with mlx-lm's own trainer.

Two ranks each see half of every batch; their loss curve equals one rank's at
the same global batch and seed only if the gradients really are averaged
across the ranks (`tools/bench/distributed.py`)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support.processes import wait_until
from tools.bench.distributed import TOLERANCE, bench_distributed, namespace_address, run_world


def test_two_ranks_train_the_one_rank_loss_curve(tiny_model: Path) -> None:
    result = bench_distributed(tiny_model, (1, 2), iters=5, batch_size=4)
    one, two = result["worlds"]["1"], result["worlds"]["2"]
    assert (one["world_seen"], one["ranks_seen"]) == (1, [0])
    assert (two["world_seen"], two["ranks_seen"]) == (2, [0, 1])  # two processes, one ring
    assert len(two["losses"]) == len(one["losses"]) == 5
    assert one["losses"][-1] < one["losses"][0]  # it trains
    assert two["max_loss_diff"] <= TOLERANCE and two["same_curve"]
    assert two["tokens_per_sec"] > 0


def test_a_rank_killed_mid_training_stops_the_other_within_seconds(tiny_model: Path) -> None:
    """kill -9 of rank 1 by PID: rank 0, blocked in the ring's all_sum, is stopped
    at once rather than left waiting for a peer that will never answer."""
    outcome: dict[str, BaseException] = {}

    def train() -> None:
        try:
            run_world(tiny_model, 2, iters=100_000, batch_size=2, seed=1, timeout_s=300)
        except BaseException as exc:  # noqa: BLE001 - the test reads it below
            outcome["error"] = exc

    def ranks() -> dict[str, psutil.Process]:
        found = {}
        for p in psutil.Process().children(recursive=True):
            try:
                if "--rank-child" in p.cmdline():
                    found[p.environ().get("MLX_RANK", "")] = p
            except psutil.NoSuchProcess:
                continue
        return found

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    wait_until(lambda: set(ranks()) == {"0", "1"}, timeout=120, what="two ranks")
    time.sleep(8)  # well into training: the ring is connected and all_sum runs
    survivor = ranks()["0"]
    os.kill(ranks()["1"].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=30)
    stopped_s = time.monotonic() - killed_at
    assert not thread.is_alive() and stopped_s < 10, stopped_s
    assert not survivor.is_running() or survivor.status() == psutil.STATUS_ZOMBIE
    assert "rank 1 of 2 exited -9" in str(outcome.get("error")), outcome


@pytest.mark.netns
def test_two_ranks_in_network_namespaces_talk_over_the_lan_and_train_the_one_rank_curve(
    tiny_model: Path,
) -> None:
    """`--netns`: each rank in its own namespace, the ring over veth links routed
    through a third namespace, as Macs on a LAN."""
    from tests.support.netns import Network, one_lan_at_a_time, peer_address

    with one_lan_at_a_time():
        network = Network(["r1", "r2"])
        try:
            network.build()
            network.route_between_hosts()
            names = (network.netns_of("r1"), network.netns_of("r2"))
            assert [namespace_address(ns) for ns in names] == [peer_address(1), peer_address(2)]
            result = bench_distributed(tiny_model, (1, 2), iters=5, batch_size=4, netns=names)
        finally:
            network.destroy()
    assert result["links"] == "netns"
    two = result["worlds"]["2"]
    assert (two["world_seen"], two["ranks_seen"]) == (2, [0, 1])
    assert two["max_loss_diff"] <= TOLERANCE and two["same_curve"]
