"""`farm bench --only distributed`: one LoRA training on 1, 2 and 3 ranks of MLX's
ring backend, on loopback addresses, with mlx-lm's own trainer.

Each rank is its own process, started as the farm's workers will start them
(`worker/ring.py`: `MLX_RANK` and `MLX_HOSTFILE`, no SSH). Every world size
trains the same LoRA of the same model on the same data with the same global
batch and seed, so their loss curves must agree: with N ranks each sees 1/N
of every batch and only the averaged gradient makes the curve the one rank's.
The examples all have the same length, so the average of the ranks' means is
the whole batch's mean and the curves agree to float rounding. Reported: each
world size's tokens/s (all ranks together), its ratio to one rank, and its
largest loss difference from one rank.

On a machine with fewer cores than ranks × MLX's threads (CI: 2 cores), the
ranks share the cores, so the ratio shows the cost of the collectives, not the
speed-up a second Mac gives.

On Linux, `--netns NS1 NS2 …` starts rank k inside network namespace NSk
(`ip netns exec`), listening on that namespace's own address: the ranks then
talk over veth links and a router, as Macs on a LAN do, rather than over
loopback. The namespaces are the caller's to make (root, iproute2).

`python -m tools.bench.distributed [--ranks 1 2 3] [--iters N] [--model DIR] [--netns NS …]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.local.services import free_port
from worker.ring import rank_environment, write_hostfile

RESULT = "rank result: "  # marks a rank's answer line
SEQ_LEN = 48
EXAMPLES = 48
TOLERANCE = 1e-3  # largest loss difference from one rank that still counts as the same curve


# --- one rank ----------------------------------------------------------------------------


def train_rank(model_dir: str, iters: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Train a LoRA on synthetic equal-length examples in this process (one rank
    of whatever world MLX_RANK / MLX_HOSTFILE describe); its losses and speed."""
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    world = mx.distributed.init()
    model, _ = load(model_dir)
    vocab = int(model.args.vocab_size)
    rows = np.random.RandomState(seed).randint(3, vocab, size=(EXAMPLES, SEQ_LEN))
    dataset = [(row.tolist(), 0) for row in rows]

    model.freeze()
    mx.random.seed(seed)  # the same LoRA initialisation on every rank
    linear_to_lora_layers(model, 2, {"rank": 8, "scale": 20.0, "dropout": 0.0})
    np.random.seed(seed)  # the same batch order on every rank

    class Report(TrainingCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.tokens_per_sec: list[float] = []

        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            self.losses.append(float(info["train_loss"]))
            self.tokens_per_sec.append(float(info["tokens_per_second"]))

    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArgs(
            batch_size=batch_size,
            iters=iters,
            steps_per_report=1,
            steps_per_eval=iters + 1,
            steps_per_save=iters + 1,
            max_seq_length=SEQ_LEN + 1,
            adapter_file=str(Path(tmp) / "adapters.safetensors"),
        )
        start = time.perf_counter()
        train(model, optim.Adam(learning_rate=1e-3), dataset, [], args=args,
              training_callback=report)  # fmt: skip
        seconds = time.perf_counter() - start
    # tokens/s after the first (compiling) step, all ranks' tokens together
    steady = report.tokens_per_sec[1:] or report.tokens_per_sec
    return {
        "rank": world.rank(),
        "world": world.size(),
        "losses": report.losses,
        "tokens_per_sec": sum(steady) / len(steady),
        "seconds": seconds,
    }


# --- the bench ---------------------------------------------------------------------------


def namespace_address(netns: str) -> str:
    """The first global IPv4 address inside network namespace `netns`."""
    out = subprocess.run(["ip", "-n", netns, "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    raise ValueError(f"network namespace {netns} has no IPv4 address")


def run_world(model_dir: Path, world: int, iters: int, batch_size: int, seed: int,
              timeout_s: float = 600, netns: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Start `world` rank processes (on loopback, or rank k inside `netns[k]`) and
    collect their results. A rank that fails stops the others at once: none is
    left waiting in a collective."""
    if netns and len(netns) < world:
        raise ValueError(f"{world} ranks need {world} network namespaces, got {len(netns)}")
    with tempfile.TemporaryDirectory(prefix="farm-ring-") as tmp:
        hostfile = None
        if world > 1:
            if netns:  # each namespace has ports of its own: any fixed one is free there
                addresses = [(namespace_address(ns), 39000 + k) for k, ns in enumerate(netns)]
            else:
                addresses = [("127.0.0.1", free_port()) for _ in range(world)]
            hostfile = write_hostfile(Path(tmp) / "hosts.json", addresses[:world])
        job = json.dumps({"model": str(model_dir), "iters": iters, "batch_size": batch_size,
                          "seed": seed})  # fmt: skip
        logs = [Path(tmp) / f"rank-{rank}.log" for rank in range(world)]
        ranks = [
            subprocess.Popen(
                (["ip", "netns", "exec", netns[rank]] if netns else [])
                + [sys.executable, "-m", "tools.bench.distributed", "--rank-child", job],
                env={**os.environ, **rank_environment(rank, world, hostfile)},
                stdout=log.open("w"),  # noqa: SIM115 - the rank owns it
                stderr=subprocess.STDOUT,
                text=True,
            )
            for rank, log in enumerate(logs)
        ]
        deadline = time.monotonic() + timeout_s
        first_failed: int | None = None  # the rank that ended badly by itself
        try:
            while any(p.poll() is None for p in ranks) and time.monotonic() < deadline:
                ended = [r for r, p in enumerate(ranks) if p.poll() not in (None, 0)]
                if ended:
                    first_failed = ended[0]
                    break
                time.sleep(0.1)
        finally:
            for process in ranks:
                if process.poll() is None:
                    process.kill()
                process.wait()
        outputs = [(p.returncode, log.read_text(errors="replace"))
                   for p, log in zip(ranks, logs, strict=True)]  # fmt: skip
    order = ([first_failed] if first_failed is not None else []) + list(range(world))
    for rank in order:
        code, out = outputs[rank]
        if code != 0 or RESULT not in out:
            raise RuntimeError(f"rank {rank} of {world} exited {code}: {out.strip()[-600:]}")
    results = [json.loads([x for x in out.splitlines() if x.startswith(RESULT)][-1]
                          .removeprefix(RESULT)) for _, out in outputs]  # fmt: skip
    return {"ranks": results, **results[0]}


def bench_distributed(model_dir: Path, worlds: tuple[int, ...] = (1, 2, 3), iters: int = 12,
                      batch_size: int = 6, seed: int = 7,
                      netns: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Each world size's tokens/s, ratio to one rank and loss difference from it."""
    if 1 not in worlds:
        worlds = (1, *worlds)
    runs = {n: run_world(model_dir, n, iters, batch_size, seed, netns=netns)
            for n in sorted(set(worlds))}  # fmt: skip
    one = runs[1]
    out: dict[str, Any] = {"iters": iters, "batch_size": batch_size, "cores": os.cpu_count(),
                           "tolerance": TOLERANCE, "links": "netns" if netns else "loopback",
                           "worlds": {}}  # fmt: skip
    for n, run in runs.items():
        diff = max(abs(a - b) for a, b in zip(run["losses"], one["losses"], strict=True))
        out["worlds"][str(n)] = {
            "tokens_per_sec": run["tokens_per_sec"],
            "ratio": run["tokens_per_sec"] / one["tokens_per_sec"],
            "max_loss_diff": diff,
            "same_curve": diff <= TOLERANCE,
            "losses": run["losses"],
            "ranks_seen": sorted(r["rank"] for r in run["ranks"]),
            "world_seen": run["world"],
        }
    return out


def distributed_rows(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for n, w in d.get("worlds", {}).items():
        rows.append((
            f"distributed: {n} rank(s) over {d.get('links', 'loopback')}, "
            f"batch {d['batch_size']}, {d['cores']} cores",
            f"{w['tokens_per_sec']:.0f} tok/s = {w['ratio']:.2f}× one rank; loss curve "
            f"{'same' if w['same_curve'] else 'DIFFERENT'} (max diff {w['max_loss_diff']:.1e})",
            "same curve",
        ))  # fmt: skip
    return rows


def main(argv: list[str]) -> None:
    if argv[:1] == ["--rank-child"]:
        job = json.loads(argv[1])
        result = train_rank(job["model"], job["iters"], job["batch_size"], job["seed"])
        print(RESULT + json.dumps(result), flush=True)
        return
    parser = argparse.ArgumentParser(prog="python -m tools.bench.distributed")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--netns", nargs="+", default=[],
                        help="network namespaces, one per rank (Linux, root)")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tools.local.tiny_model import make_tiny_model

            model = make_tiny_model(Path(tmp) / "tiny")
        result = bench_distributed(model, tuple(args.ranks), args.iters, netns=tuple(args.netns))
    for row in distributed_rows(result):
        print(" · ".join(row[:2]))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
