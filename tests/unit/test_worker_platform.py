"""What a worker says about its machine: the memory it offers, its chip, how it
starts its work horse. The macOS paths take their platform facts as arguments,
so their logic runs here on Linux too; only the facts themselves (Metal's
working set, sysctl's chip name) need a Mac."""

from __future__ import annotations

import platform
import sys

import psutil
import pytest

from jobs.queue import queues_for_worker
from worker.main import (
    FarmSpawnWorker,
    FarmWorker,
    chip_name,
    default_memory_gb,
    metal_device_info,
    sysctl_value,
    total_memory_gb,
    worker_class,
)

GB = 1_000_000_000
# What MLX reports on a 32 GB Apple Silicon Mac (M2 Pro): about two thirds of RAM.
MAC_32GB = {
    "architecture": "applegpu_g14s",
    "device_name": "Apple M2 Pro",
    "memory_size": 34_359_738_368,
    "max_recommended_working_set_size": 22_906_503_168,
}


def test_a_mac_offers_its_gpu_working_set_not_its_ram() -> None:
    offered = default_memory_gb("darwin", device_info=MAC_32GB, total_bytes=MAC_32GB["memory_size"])
    assert offered == 22.9
    # The point: a 32 GB Mac no longer takes jobs from the 32 GB tier.
    assert "farm:mem:32" not in queues_for_worker("m2", offered)
    assert "farm:mem:32" in queues_for_worker("m2", total_memory_gb(MAC_32GB["memory_size"]))


def test_a_mac_whose_mlx_gives_no_working_set_offers_its_ram() -> None:
    info = {"architecture": "arm64", "device_name": "Apple M1"}  # MLX without Metal
    assert default_memory_gb("darwin", device_info=info, total_bytes=16 * GB) == 16.0
    assert default_memory_gb("darwin", device_info={}, total_bytes=16 * GB) == 16.0


def test_the_working_set_is_capped_at_ram() -> None:
    info = {"max_recommended_working_set_size": 40 * GB}
    assert default_memory_gb("darwin", device_info=info, total_bytes=32 * GB) == 32.0


def test_linux_offers_total_ram_whatever_mlx_says() -> None:
    info = {"max_recommended_working_set_size": 4 * GB}
    assert default_memory_gb("linux", device_info=info, total_bytes=64 * GB) == 64.0


@pytest.mark.skipif(sys.platform == "darwin", reason="Linux default")
def test_this_linux_machine_offers_its_ram() -> None:
    assert default_memory_gb() == total_memory_gb() == round(psutil.virtual_memory().total / GB, 1)


def test_mlx_is_asked_in_a_child_process() -> None:
    """The real query: MLX answers from a child (here on the CPU, without a
    working set, so a Mac's rule falls back to RAM; on a Mac, the working set)."""
    info = metal_device_info()
    assert info.get("device_name")
    working_set = info.get("max_recommended_working_set_size")
    expected = min(round(working_set / GB, 1), 8.0) if working_set else 8.0
    assert default_memory_gb("darwin", total_bytes=8 * GB) == expected


def test_chip_name_on_a_mac_is_the_cpu_brand() -> None:
    assert chip_name("darwin", brand="Apple M2 Max") == "Apple M2 Max"
    assert chip_name("darwin", brand="") == platform.machine()


@pytest.mark.skipif(sys.platform == "darwin", reason="sysctl has the key on a Mac")
def test_chip_name_falls_back_when_sysctl_has_no_brand() -> None:
    assert sysctl_value("machdep.cpu.brand_string") == ""
    assert chip_name("darwin") == platform.machine()
    assert chip_name("linux") == (platform.processor() or platform.machine())


def test_the_spawned_horse_is_chosen_by_platform_or_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """macOS must not fork after CoreFoundation is loaded; FARM_SPAWN_HORSE=1 runs
    the spawned horse here too (tests/test_farm.py runs a job through it)."""
    monkeypatch.setenv("FARM_SPAWN_HORSE", "1")
    assert worker_class() is FarmSpawnWorker
    monkeypatch.setenv("FARM_SPAWN_HORSE", "0")
    assert worker_class() is FarmWorker
    monkeypatch.delenv("FARM_SPAWN_HORSE")
    assert worker_class() is (FarmSpawnWorker if sys.platform == "darwin" else FarmWorker)
