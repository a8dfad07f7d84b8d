"""Starting the ranks of one data-parallel training on MLX's ring backend.

This is the protocol `mlx.launch` uses, without its SSH: every rank gets
`MLX_RANK` and `MLX_HOSTFILE`, a JSON file with one list of `ip:port` per
rank, in rank order; `mx.distributed.init(backend="ring")` then connects the
ranks, and mlx-lm's trainer, unchanged, averages their gradients. Pure, apart
from writing the hostfile.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

Address = tuple[str, int]  # (ip, port) a rank listens on


def hostfile_text(addresses: Sequence[Address]) -> str:
    """The hostfile of ranks at these addresses, rank 0 first. The ring backend
    takes IP addresses only: a host name is refused here, not in a collective."""
    ranks = []
    for ip, port in addresses:
        ipaddress.ip_address(ip)  # ValueError names a host name given instead
        if not 0 < port < 65536:
            raise ValueError(f"port {port} of {ip} is not a TCP port")
        ranks.append([f"{ip}:{port}"])
    return json.dumps(ranks)


def write_hostfile(path: Path, addresses: Sequence[Address]) -> Path:
    path.write_text(hostfile_text(addresses))
    return path


def rank_environment(rank: int, world: int, hostfile: Path | None) -> dict[str, str]:
    """The variables a rank's process needs; a single rank needs none (MLX runs
    it alone, as `mlx.launch` does with one host)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    if world == 1:
        return {}
    if hostfile is None:
        raise ValueError(f"a world of {world} ranks needs a hostfile")
    return {"MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)}
