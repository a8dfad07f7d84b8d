"""A check that may run away, run in a child process that is killed at a time limit.

A chat template is a program (Jinja): one with nested loops over the messages can
render a conversation for hours, and a thread cannot be stopped. The tokenizer
checks (`jobs.checks.model.model_findings`) therefore run in a spawned process
(spawn, not fork: on macOS the farm must not fork after CoreFoundation is
loaded); the caller waits on a pipe, which holds no lock, so a web server's
other sessions keep running, and at the limit the child is killed and the check
becomes a finding that says so.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class Bounded:
    """How a bounded call ended: its value, or the error it raised, or the time limit."""

    value: Any = None
    error: str = ""  # "TypeError: …" when the call raised or the child died
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.error and not self.timed_out


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
        result = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(result)
    except Exception as exc:  # noqa: BLE001 - a value that does not pickle
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    conn.close()


def call_with_time_limit(fn: Callable[..., Any], args: tuple[Any, ...], limit_s: float) -> Bounded:
    """`fn(*args)` in a spawned child (fn and args must pickle), killed after `limit_s`."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, fn, args), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(limit_s):
            return Bounded(timed_out=True)
        try:
            status, value = receiver.recv()
        except (EOFError, OSError):
            process.join(5)
            return Bounded(error=f"the check's process ended with exit code {process.exitcode}")
        return Bounded(value=value) if status == "ok" else Bounded(error=str(value))
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(5)
