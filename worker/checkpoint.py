"""Full training checkpoints: adapter weights, optimizer state and the iteration.

A checkpoint of iteration N is three files in the run's adapter folder, each
written under a temporary name and renamed into place, the marker last:

    {N:07d}_adapters.safetensors   the trainable weights (eval stages read it)
    {N:07d}_optimizer.safetensors  `tree_flatten(optimizer.state)`, step included
    {N:07d}_checkpoint.json        the iteration, the planned iters, RNG states

The marker's presence means the set is complete, so a stage killed while
writing leaves at most a partial set that `newest_complete_checkpoint` ignores.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

MARKER_RE = re.compile(r"^(\d{7})_checkpoint\.json$")
TMP_TAG = ".tmp-"  # `.{name}.tmp-{pid}`: never matches the names above


def adapters_file(adapter_dir: Path, iteration: int) -> Path:
    return adapter_dir / f"{iteration:07d}_adapters.safetensors"


def optimizer_file(adapter_dir: Path, iteration: int) -> Path:
    return adapter_dir / f"{iteration:07d}_optimizer.safetensors"


def marker_file(adapter_dir: Path, iteration: int) -> Path:
    return adapter_dir / f"{iteration:07d}_checkpoint.json"


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write` into a temporary file next to `path`, flushed to disk, then renamed
    over `path`: readers see the old file or the whole new one, never a prefix."""
    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    # The renames themselves must reach the disk for the set to survive a host crash.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def saved_checkpoints(adapter_dir: Path, iters: int | None = None) -> list[int]:
    """Iterations whose marker and weights are on disk, oldest first: the
    checkpoints eval stages can use. Those beyond the planned `iters` are not
    this run's."""
    if not adapter_dir.is_dir():
        return []
    found = []
    for path in adapter_dir.iterdir():
        match = MARKER_RE.match(path.name)
        if not match:
            continue
        iteration = int(match.group(1))
        if iters is not None and iteration > iters:
            continue
        if adapters_file(adapter_dir, iteration).is_file():
            found.append(iteration)
    return sorted(found)


def complete_checkpoints(adapter_dir: Path, iters: int | None = None) -> list[int]:
    """Saved checkpoints that still have their optimizer state: the ones a
    retried stage can resume from."""
    saved = saved_checkpoints(adapter_dir, iters)
    return [n for n in saved if optimizer_file(adapter_dir, n).is_file()]


def newest_complete_checkpoint(adapter_dir: Path, iters: int | None = None) -> int | None:
    """The iteration a retried train stage resumes from, or None to start afresh."""
    complete = complete_checkpoints(adapter_dir, iters)
    return complete[-1] if complete else None


def prune_optimizer_states(adapter_dir: Path, newest: int) -> None:
    """Only the newest checkpoint is resumed from: older optimizer states (twice
    the weights with Adam, gigabytes in a full fine-tune) go, weights stay."""
    for path in adapter_dir.glob("*_optimizer.safetensors"):
        if int(path.name.split("_", 1)[0]) < newest:
            path.unlink(missing_ok=True)


def random_states() -> dict[str, Any]:
    """mx.random's key (dropout) and numpy's global state (validation batches),
    as JSON, so a resumed run draws what the uninterrupted run would have."""
    key = np.array(mx.random.state[0]).tolist()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "mx_key": key,
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
    }


def random_words(states: dict[str, Any]) -> np.ndarray:
    """`random_states()` as one uint32 vector of fixed length, to send to the
    other ranks of a gang: the mx key, numpy's 624 words, its position, its
    cached-gaussian flag and the cached value's two words."""
    hi, lo = states["mx_key"]
    _, keys, pos, has_gauss, cached = states["numpy"]
    cached_words = np.array([cached], dtype=np.float64).view(np.uint32)
    return np.array([hi, lo, *keys, pos, has_gauss, *cached_words], dtype=np.uint32)


def states_from_words(words: np.ndarray) -> dict[str, Any]:
    """`random_words` read back."""
    words = np.asarray(words, dtype=np.uint32)
    cached = float(words[-2:].view(np.float64)[0])
    return {
        "mx_key": [int(words[0]), int(words[1])],
        "numpy": ["MT19937", words[2:-4].tolist(), int(words[-4]), int(words[-3]), cached],
    }


def restore_random_states(states: dict[str, Any]) -> None:
    # mx.random.state has no setter; seeding with the 64-bit (hi, lo) key sets
    # exactly that key.
    hi, lo = states["mx_key"]
    mx.random.seed((hi << 32) | lo)
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    adapter_dir: Path,
    iteration: int,
    iters: int,
    model: nn.Module,
    optimizer: optim.Optimizer | None,
    **extra: Any,
) -> None:
    """The checkpoint of `iteration`: weights, optimizer state, then the marker.
    Without `optimizer` only the weights: eval stages can use it, no stage
    resumes from it."""
    weights = dict(tree_flatten(model.trainable_parameters()))
    write_atomically(
        adapters_file(adapter_dir, iteration), lambda f: mx.save_safetensors(f, weights)
    )
    if optimizer is not None:
        state = dict(tree_flatten(optimizer.state))
        write_atomically(
            optimizer_file(adapter_dir, iteration), lambda f: mx.save_safetensors(f, state)
        )
    marker = {
        "iteration": iteration,
        "iters": iters,
        "saved_at": time.time(),
        "random": random_states(),
        **extra,
    }
    write_atomically(
        marker_file(adapter_dir, iteration), lambda f: f.write(json.dumps(marker).encode())
    )
    fsync_dir(adapter_dir)
    if optimizer is not None:
        prune_optimizer_states(adapter_dir, iteration)  # only once this one is complete


def load_checkpoint(
    adapter_dir: Path, iteration: int, model: nn.Module, optimizer: optim.Optimizer
) -> dict[str, Any]:
    """Load checkpoint `iteration` into the LoRA-wrapped `model` and `optimizer`;
    returns its marker. The optimizer's restored `step` continues the schedule."""
    model.load_weights(str(adapters_file(adapter_dir, iteration)), strict=False)
    state = mx.load(str(optimizer_file(adapter_dir, iteration)))
    # Layers without trainable weights come back as empty entries; the optimizer's
    # own init fills any missing state on its first update.
    optimizer.state = tree_unflatten(list(state.items()))
    marker = json.loads(marker_file(adapter_dir, iteration).read_text())
    restore_random_states(marker["random"])
    mx.eval(model.trainable_parameters(), optimizer.state)
    return marker


def remove_stray_temporaries(adapter_dir: Path) -> list[Path]:
    """Temporary files a killed attempt left half written."""
    stray = [p for p in adapter_dir.glob(f".*{TMP_TAG}*") if p.is_file()]
    for path in stray:
        path.unlink(missing_ok=True)
    return stray
