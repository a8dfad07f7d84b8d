"""`farm tls`: the coordinator's CA and certificate, and how each Mac trusts them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from jobs import settings

console = Console()


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
    console.print(f"CA      {files.ca}  (copy it to every Mac)", soft_wrap=True)
    console.print(f"sha256  {files.fingerprint()}", soft_wrap=True)
    console.print(f"server  {files.cert}, {files.key}  (for {', '.join(address)})", soft_wrap=True)
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
