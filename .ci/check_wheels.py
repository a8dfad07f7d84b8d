"""Check that lorafarm's locked dependencies install from wheels alone on the
platforms the farm runs on, so a fresh Mac needs no compiler (no Xcode tools).

    python3 .ci/check_wheels.py               # the lock, via `uv export`
    python3 .ci/check_wheels.py req.txt       # any requirements file

Exits 1 and names each package that has no wheel for a platform. Needs only
the standard library and `uv` on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The Pythons that requires-python in pyproject.toml allows: `uv run` may pick
# any of them on a user's machine, so each must install from wheels.
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")


@dataclass(frozen=True)
class Target:
    label: str
    platform: str  # a uv --python-platform name
    env: dict[str, str] = field(default_factory=dict)


TARGETS = (
    # MLX's Metal wheels start at macOS 14; uv assumes 13 unless told.
    Target("macOS 14 arm64", "aarch64-apple-darwin", {"MACOSX_DEPLOYMENT_TARGET": "14.0"}),
    # mlx's Linux (CPU) wheels are tagged manylinux_2_35: glibc 2.35, Ubuntu 22.04 / Debian 12.
    Target("Linux x86_64", "x86_64-manylinux_2_35"),
)

# uv says "Because NAME==VERSION has no usable wheels" (only an sdist) or
# "NAME{markers}==VERSION has no wheels with a matching platform tag".
NO_WHEEL = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?(?:\{[^}]*\})?==(?P<version>\S+?),? "
    r"has no (?:usable wheels|wheels with a matching platform tag)"
)


def export_lock(dest: Path) -> Path:
    """The locked dependencies (dev group included) as a requirements file."""
    with dest.open("w") as out:
        subprocess.run(
            ["uv", "export", "--frozen", "--no-hashes", "--no-emit-project"],
            cwd=PROJECT_ROOT,
            stdout=out,
            check=True,
        )
    return dest


def resolve_error(requirements: Path, target: Target, python: str) -> str | None:
    """uv's error when `requirements` cannot be installed from wheels on the target."""
    result = subprocess.run(
        ["uv", "pip", "compile", str(requirements), "--python-platform", target.platform]
        + ["--python-version", python, "--only-binary", ":all:", "-q", "-o", os.devnull]
        # Resolve for versions not installed here without fetching an interpreter.
        + ["--no-python-downloads"],
        env={**os.environ, **target.env},
        capture_output=True,
        text=True,
    )
    return None if result.returncode == 0 else result.stderr.strip() or result.stdout.strip()


def packages_without_wheels(error: str) -> list[str]:
    """`name version` of each package uv names as lacking a wheel."""
    found = [f"{m['name']} {m['version']}" for m in NO_WHEEL.finditer(error)]
    return list(dict.fromkeys(found))


def failure_line(target: Target, python: str, error: str) -> str:
    where = f"{target.label}, Python {python}"
    missing = packages_without_wheels(error)
    if missing:
        return f"{where}: no wheel for {', '.join(missing)} (it would need a compiler)"
    return f"{where}: does not resolve from wheels alone:\n{error}"


def check(requirements: Path) -> list[str]:
    """One line per platform and Python the requirements cannot install on."""
    failures = []
    for target in TARGETS:
        for python in PYTHON_VERSIONS:
            error = resolve_error(requirements, target, python)
            if error is not None:
                failures.append(failure_line(target, python, error))
    return failures


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(argv[0]) if argv else export_lock(Path(tmp) / "requirements.txt")
        failures = check(requirements)
    for line in failures:
        print(f"wheel check: {line}", file=sys.stderr)
    if failures:
        return 1
    platforms = ", ".join(t.label for t in TARGETS)
    print(f"wheel check: every dependency has a wheel for {platforms} (Python 3.11-3.13)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
