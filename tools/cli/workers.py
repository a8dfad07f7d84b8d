"""`farm worker` (a Mac's worker, joining a LAN farm with `--join TOKEN` once)
and `farm workers add|revoke|list` (the coordinator's say over which Macs may
connect)."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jobs import settings

# Tokens and fingerprints print as they are: no markup, no emoji, no wrapping
# inside a token a user copies.
console = Console(emoji=False, highlight=False)
err = Console(stderr=True)


def worker(
    name: Annotated[
        str | None, typer.Option(help="Worker name (default: the join token's, else host-pid)")
    ] = None,
    memory_gb: Annotated[
        float | None,
        typer.Option(
            "--memory-gb",
            help="Memory this worker offers (default: on a Mac, the GPU working set MLX "
            "recommends; elsewhere total RAM)",
        ),
    ] = None,
    burst: Annotated[bool, typer.Option(help="Exit when the queues are empty")] = False,
    advertise_address: Annotated[
        str | None,
        typer.Option(
            "--advertise-address",
            help="IP address the other workers of a gang (train.workers > 1) reach this one "
            "at (default: the address of the interface that reaches Redis)",
        ),
    ] = None,
    join: Annotated[
        str | None,
        typer.Option(
            "--join",
            metavar="TOKEN",
            help="Join a LAN farm with the token `farm up --lan` printed ('-': read it from "
            "stdin). It is kept 0600 under FARM_HOME; later, `farm worker` alone reconnects",
        ),
    ] = None,
) -> None:
    """Run a worker: pulls stages from Redis (REDIS_URL, or the farm joined with
    --join) and runs them with mlx-lm."""
    import ipaddress

    from jobs.join_token import TokenError
    from worker.join import joined_urls, store_token
    from worker.main import default_memory_gb, run_worker

    if advertise_address is not None:
        try:
            ipaddress.ip_address(advertise_address)
        except ValueError:
            err.print(
                f"[red]--advertise-address {advertise_address!r} is not an IP address[/]: "
                "MLX's ring connects ranks by address, not by host name"
            )
            raise typer.Exit(2) from None
    try:
        if join is not None:
            token = store_token(sys.stdin.read() if join == "-" else join)
            joined = f"joined the farm at {', '.join(token.addresses)} as {token.name}"
            console.print(f"{joined}; its CA's sha256 is {token.ca_sha256}",
                          markup=False, soft_wrap=True)  # fmt: skip
            # Start again without the token: every process's command line is
            # readable by every user of the Mac, for as long as it runs.
            argv = [sys.executable, "-m", "tools.cli", "worker"]
            argv += ["--name", name] if name else []
            argv += ["--memory-gb", str(memory_gb)] if memory_gb is not None else []
            argv += ["--burst"] if burst else []
            argv += ["--advertise-address", advertise_address] if advertise_address else []
            os.execv(sys.executable, argv)
        url = settings.redis_url()
        if url is None and (joined := joined_urls()) is not None:
            token, url, database_url = joined
            os.environ["REDIS_URL"] = url  # to the worker's children by environment only
            os.environ["DATABASE_URL"] = database_url
            name = name or token.name
    except TokenError as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if url is None:
        err.print("[red]REDIS_URL is not set[/]: a worker needs the coordinator's Redis, "
                  "or a join token (`farm worker --join TOKEN`)")  # fmt: skip
        raise typer.Exit(1)
    name = name or f"{os.uname().nodename.split('.')[0]}-{os.getpid()}"
    run_worker(name, memory_gb or default_memory_gb(), url, burst=burst,
               advertise_address=advertise_address)  # fmt: skip


workers_app = typer.Typer(
    help="The Macs of a LAN farm (`farm up --lan`): a join token each, revocable alone.",
    no_args_is_help=True,
)


def _coordinator():  # type: ignore[no-untyped-def]
    from redis import Redis

    from tools.local.lan import LanError, load_coordinator

    try:
        coordinator, admin_url = load_coordinator()
    except LanError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    return coordinator, Redis.from_url(admin_url)


@workers_app.command("add")
def add(name: Annotated[str, typer.Argument(help="The Mac's worker name")]) -> None:
    """A join token for Mac NAME (a new one replaces its old token)."""
    from jobs.join_token import TokenError, encode_token
    from tools.local.credentials import issue

    coordinator, redis = _coordinator()
    try:
        token = issue(redis, name, coordinator)
    except TokenError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    print_join_line(name, encode_token(token))


def print_join_line(name: str, token: str) -> None:
    console.print(f"on {name}:  farm worker --join {token}", markup=False, soft_wrap=True)


@workers_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The Mac's worker name")]) -> None:
    """Shut Mac NAME out: Redis and the database refuse its next connection and
    drop the ones it has; its running stage is retried elsewhere."""
    from tools.local.credentials import CredentialError
    from tools.local.credentials import revoke as revoke_credential

    _, redis = _coordinator()
    try:
        revoke_credential(redis, name)
    except CredentialError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"revoked {name}: Redis and the database refuse it from now on")


@workers_app.command("list")
def list_credentials(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The Macs given a join token, and which were revoked."""
    from tools.local.credentials import credentials

    rows = credentials()
    if as_json:
        fields = ("name", "redis_user", "db_role", "created_at", "revoked_at")
        print(json.dumps([row.model_dump(mode="json", include=set(fields)) for row in rows]))
        return
    table = Table("name", "Redis user", "database role", "issued", "revoked")
    for row in rows:
        table.add_row(row.name, row.redis_user, row.db_role or "-",
                      f"{row.created_at:%Y-%m-%d %H:%M}",
                      f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "")  # fmt: skip
    console.print(table)
