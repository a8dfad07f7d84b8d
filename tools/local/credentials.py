"""Each Mac's own credential on a LAN farm: issued in a join token, revocable alone.

Run on the coordinator with its own (admin) Redis and database connections.
A Mac gets a Redis ACL user and, where the farm's database is PostgreSQL, a
login role in the `farm_workers` group; the DB keeps a row per Mac
(`WorkerCredential`). Revoking deletes the Redis user and closes its
connections, and forbids the role to log in and ends its sessions: the Mac's
next command is refused by both, and its running stage goes lost, then is
retried elsewhere, as for any worker that stops beating.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from redis import Redis
from sqlalchemy import text
from sqlmodel import Session, select

from jobs.db import WorkerCredential, get_engine, session_scope, utcnow
from jobs.join_token import JoinToken, check_name, db_role_of, fingerprint, redis_user_of

WORKERS_GROUP = "farm_workers"

# What a worker may do in Redis: everything RQ and the farm do (jobs, queues,
# registries, pub/sub stop commands, INFO for RQ's version check), nothing that
# reconfigures, empties or stops the server, or reads other clients' traffic.
WORKER_ACL = ["~*", "&*", "+@all", "-@admin", "-@dangerous", "+info", "+client|setname",
              "+client|getname", "+client|id", "+client|info"]  # fmt: skip


@dataclass(frozen=True)
class Coordinator:
    """Where the Macs reach the coordinator, and the CA they are to trust."""

    addresses: list[str]
    redis_port: int
    db_host: str | None
    db_port: int
    db_name: str
    ca_der: bytes


class CredentialError(RuntimeError):
    pass


def password_sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def set_redis_user(redis: Redis, user: str, password_hash: str) -> None:
    """Create or replace `user` with exactly the worker's rights (reset first)."""
    redis.execute_command("ACL", "SETUSER", user, "reset", "on", f"#{password_hash}", *WORKER_ACL)


def drop_redis_user(redis: Redis, user: str) -> None:
    """No new connection as `user` (off), none left open (CLIENT KILL), then
    no user at all (DELUSER, which also closes connections on Redis 7)."""
    from redis.exceptions import ResponseError

    redis.execute_command("ACL", "SETUSER", user, "off")
    with contextlib.suppress(ResponseError):  # no connection open: nothing to kill
        redis.execute_command("CLIENT", "KILL", "USER", user)
    redis.execute_command("ACL", "DELUSER", user)


def restore_redis_users(redis: Redis) -> int:
    """Make the ACL users of every Mac not revoked (Redis forgets them on restart)."""
    with session_scope() as session:
        rows = session.exec(
            select(WorkerCredential).where(WorkerCredential.revoked_at.is_(None))  # type: ignore[union-attr]
        ).all()
    for row in rows:
        set_redis_user(redis, row.redis_user, row.redis_password_sha256)
    return len(rows)


def _is_postgres() -> bool:
    return get_engine().dialect.name == "postgresql"


def _psycopg(session: Session) -> Any:
    """The psycopg connection under the session (for identifiers and password hashing)."""
    return session.connection().connection.driver_connection


def grant_workers_group(session: Session) -> None:
    """The group role every Mac's role is in, with the rights a worker needs on
    the farm's tables (now and those later migrations create)."""
    from psycopg import sql

    conn = _psycopg(session)
    group = sql.Identifier(WORKERS_GROUP)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (WORKERS_GROUP,))
    if exists.fetchone() is None:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
    database = sql.Identifier(conn.execute("SELECT current_database()").fetchone()[0])
    for statement in (
        "GRANT CONNECT ON DATABASE {db} TO {g}",
        "GRANT USAGE ON SCHEMA public TO {g}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {g}",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {g}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {g}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {g}",
    ):
        conn.execute(sql.SQL(statement).format(db=database, g=group))


def _set_db_role(session: Session, role: str, password: str) -> None:
    from psycopg import sql

    conn = _psycopg(session)
    # Only the SCRAM verifier reaches the server: no clear password in its logs.
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    conn.execute(
        sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(verifier.decode())
        )
    )
    conn.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(WORKERS_GROUP), sql.Identifier(role))
    )


def issue(redis: Redis, name: str, coordinator: Coordinator) -> JoinToken:
    """A new credential for Mac `name` (replacing any earlier one: its old token
    stops working) and the token that carries it."""
    check_name(name)
    redis_password = secrets.token_urlsafe(32)
    db_password = secrets.token_urlsafe(32)
    role = db_role_of(name) if _is_postgres() else None
    with session_scope() as session:
        row = session.exec(select(WorkerCredential).where(WorkerCredential.name == name)).first()
        row = row or WorkerCredential(name=name, redis_user="", redis_password_sha256="")
        row.redis_user = redis_user_of(name)
        row.redis_password_sha256 = password_sha256(redis_password)
        row.db_role, row.created_at, row.revoked_at = role, utcnow(), None
        session.add(row)
        if role is not None:
            grant_workers_group(session)
            _set_db_role(session, role, db_password)
        set_redis_user(redis, row.redis_user, row.redis_password_sha256)
    return JoinToken(
        name=name,
        addresses=coordinator.addresses,
        redis_port=coordinator.redis_port,
        redis_user=redis_user_of(name),
        redis_password=redis_password,
        db_host=coordinator.db_host,
        db_port=coordinator.db_port,
        db_name=coordinator.db_name,
        db_user=role or "",
        db_password=db_password if role else "",
        ca_der=coordinator.ca_der,
        ca_sha256=fingerprint(coordinator.ca_der),
    )


def revoke(redis: Redis, name: str) -> WorkerCredential:
    """Shut Mac `name` out: Redis and the database refuse its next connection
    and drop the ones it has."""
    from psycopg import sql

    with session_scope() as session:
        row = session.exec(select(WorkerCredential).where(WorkerCredential.name == name)).first()
        if row is None:
            raise CredentialError(
                f"no worker {name!r} was given a join token here; `farm workers list` "
                "shows the ones that were"
            )
        row.revoked_at = row.revoked_at or utcnow()
        session.add(row)
        drop_redis_user(redis, row.redis_user)
        role = row.db_role if _is_postgres() else None
        if role is not None:
            _psycopg(session).execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
    if role is not None:  # once NOLOGIN is committed: no session it ends can come back
        with session_scope() as session:
            session.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = :role"),
                {"role": role},
            )  # fmt: skip
    return row


def credentials() -> list[WorkerCredential]:
    with session_scope() as session:
        return list(session.exec(select(WorkerCredential).order_by(WorkerCredential.name)).all())
