"""A check that may run away, run in a child process that is killed at a time limit.

A chat template is a program (Jinja): one with nested loops over the messages can
render a conversation for hours, and a thread cannot be stopped. The tokenizer
checks (`jobs.checks.model.model_findings`) therefore run in a child process
(never forked from the caller: on macOS the farm must not fork after
CoreFoundation is loaded); the caller waits on a pipe, which holds no lock, so a
web server's other sessions keep running, and at the limit the child is killed
and the check becomes a finding that says so.

The children come from multiprocessing's fork server: one clean process,
started at the first check, that has imported transformers and the check's
module once and forks each check from there. A check then starts in
milliseconds instead of the second a fresh interpreter takes to import
transformers, which every `farm submit` and every form check in the UI would
pay. The fork server keeps the environment it started with, so each child is
handed the caller's environment and working directory.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
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


# Set in a bounded child: a bounded call made there (the web form's check runs the
# tokenizer checks) stays in the child's process group, which the limit kills whole.
_in_child = False


# Imported once by the fork server, before it forks any check.
PRELOAD = ("transformers",)


def _child(
    conn: Connection,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    environ: dict[str, str],
    cwd: str,
) -> None:
    global _in_child
    if not _in_child and hasattr(os, "setpgrp"):
        os.setpgrp()  # its own group: a kill at the limit takes its children too
    _in_child = True
    os.environ.clear()
    os.environ.update(environ)  # the caller's, not the fork server's, settings
    os.chdir(cwd)
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
    """`fn(*args)` in a child (fn and args must pickle), killed after `limit_s`."""
    context = _context(fn)
    receiver, sender = context.Pipe(duplex=False)
    # Not a daemon: a daemon may not start children of its own.
    child_args = (sender, fn, args, dict(os.environ), os.getcwd())
    process = context.Process(target=_child, args=child_args, daemon=False)
    own_group = not _in_child and hasattr(os, "killpg")
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
        _kill(process, own_group)
        process.join(5)


def _context(fn: Callable[..., Any]) -> Any:
    """The fork server's context; inside a bounded child (itself a fork of that
    clean process) a plain fork, which needs no fork server of its own."""
    if _in_child or not hasattr(os, "fork"):
        return multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    context = multiprocessing.get_context("forkserver")
    # Read when the fork server starts (the first check): later calls change nothing.
    context.set_forkserver_preload([*PRELOAD, fn.__module__])
    return context


def _kill(process: Any, own_group: bool) -> None:
    """The child and, when it leads its own process group, whatever it started."""
    if own_group and process.pid is not None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone, or it had not made its group yet
    if process.is_alive():
        process.kill()
