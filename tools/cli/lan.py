"""The coordinator on a LAN: `farm up --lan` (TLS Redis and UI, and a join
token per Mac), `farm tls` (its CA and certificate, and how each Mac trusts
them) and `farm web` (the UI alone, over https with `--tls`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from jobs import settings

if TYPE_CHECKING:
    from tools.local.lan import Lan

# Paths and fingerprints print as they are: no markup, and no emoji, which would
# turn a fingerprint's ":AB:" into a picture.
console = Console(emoji=False, highlight=False)
err = Console(stderr=True)


def tls(
    address: Annotated[
        list[str],
        typer.Option("--address", help="An address the Macs reach the coordinator at (repeat)"),
    ],
) -> None:
    """Make the coordinator's private CA (once) and a certificate for its addresses,
    under FARM_HOME/tls, for Redis, PostgreSQL and the web UI over TLS."""
    from tools.local.tls import coordinator_tls

    files = coordinator_tls(settings.farm_home() / "tls", address)
    host = address[0]
    console.print(f"CA      {files.ca}  (copy it to every Mac)", markup=False, soft_wrap=True)
    console.print(f"sha256  {files.fingerprint()}", markup=False, soft_wrap=True)
    console.print(f"server  {files.cert}, {files.key}  (for {', '.join(address)})",
                  markup=False, soft_wrap=True)  # fmt: skip
    console.print("On each Mac, after checking the CA's sha256 against the line above:")
    console.print(
        f"  REDIS_URL='rediss://:PASSWORD@{host}:6379/0?ssl_cert_reqs=required"
        "&ssl_ca_certs=/path/to/ca.pem'",
        markup=False, soft_wrap=True,
    )  # fmt: skip
    console.print(
        f"  DATABASE_URL='postgresql://farm:PASSWORD@{host}:5432/farm?sslmode=verify-full"
        "&sslrootcert=/path/to/ca.pem'",
        markup=False, soft_wrap=True,
    )  # fmt: skip


def web(
    port: Annotated[int, typer.Option()] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve https with FARM_HOME/tls (made by `farm tls`)")
    ] = False,
) -> None:
    """Run the web UI alone (the LAN coordinator)."""
    from tools.local.stack import streamlit_argv
    from tools.local.tls import TlsFiles

    warn_if_exposed(address)
    files = TlsFiles(settings.farm_home() / "tls") if tls else None
    if files is not None and not (files.cert.exists() and files.key.exists()):
        err.print(
            f"[red]no certificate in {files.folder}[/]: run `farm tls --address ADDRESS`",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    argv = streamlit_argv(port, address, files)
    # X-Forwarded-For only from FARM_TRUSTED_PROXIES (sign-in counts by address).
    os.environ["FORWARDED_ALLOW_IPS"] = settings.forwarded_allow_ips()
    os.execv(argv[0], argv)


def warn_if_exposed(address: str) -> None:
    from jobs.access import is_loopback, password_configured

    if not is_loopback(address) and not password_configured():
        err.print(
            f"[yellow]warning:[/] the UI binds to {address} without a password; "
            "anyone on the network can submit and cancel. Set FARM_UI_PASSWORD."
        )


def prepare_lan(addresses: list[str], redis_port: int, names: list[str]) -> Lan:
    """What `farm up --lan` needs before it starts anything: addresses and Mac
    names it can use, a database the Macs can share, and the coordinator's
    certificate for its addresses (and loopback, which its own workers and UI
    use)."""
    import ipaddress

    from jobs.join_token import TokenError, check_name
    from tools.local.lan import Lan, LanError, database_for_macs
    from tools.local.tls import coordinator_tls

    try:
        for name in names:
            check_name(name)
        for address in addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise LanError(
                    f"--lan {address!r} is not an IP address: Redis and the UI listen on "
                    "this machine's addresses (e.g. --lan 192.168.1.10); a host name the "
                    "Macs use can be added to the certificate with `farm tls --address`"
                ) from None
        database_for_macs(settings.database_url())
    except (LanError, TokenError) as exc:
        err.print(f"farm up --lan: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    names = list(dict.fromkeys([*addresses, "127.0.0.1"]))
    files = coordinator_tls(settings.farm_home() / "tls", names)
    return Lan(addresses, redis_port, files)


def welcome_macs(redis_url: str, lan: Lan, names: list[str]) -> None:
    """Give the Macs their way in: the ACL users of those that joined before
    (Redis forgot them), the check that PostgreSQL serves TLS, and a join
    token for each Mac in `names` that has none yet."""
    from redis import Redis

    from jobs.join_token import encode_token
    from tools.cli.workers import print_join_line
    from tools.local.credentials import Coordinator, credentials, issue, restore_redis_users
    from tools.local.lan import (
        ca_der,
        check_database_tls,
        database_for_macs,
        redis_port_of,
        save_coordinator,
    )

    admin = Redis.from_url(redis_url)
    restore_redis_users(admin)
    coordinator = Coordinator(
        lan.addresses, redis_port_of(redis_url), *database_for_macs(settings.database_url()),
        ca_der=ca_der(lan.tls),
    )  # fmt: skip
    save_coordinator(coordinator, redis_url)
    problem = check_database_tls(coordinator, lan.tls.ca)
    if problem is not None:
        err.print(f"[yellow]warning:[/] {escape(problem)}", soft_wrap=True)
    console.print(f"the Macs trust CA sha256 {lan.tls.fingerprint()}", markup=False, soft_wrap=True)
    joined = {row.name: row for row in credentials() if row.revoked_at is None}
    for name in names:
        if name in joined:
            issued = f"{joined[name].created_at:%Y-%m-%d %H:%M}"
            console.print(f"{name} has a token already (issued {issued}); "
                          f"`farm workers add {name}` replaces it",
                          markup=False, soft_wrap=True)  # fmt: skip
            continue
        print_join_line(name, encode_token(issue(admin, name, coordinator)))
    console.print("more Macs: `farm workers add NAME`; shut one out: `farm workers revoke NAME`")
