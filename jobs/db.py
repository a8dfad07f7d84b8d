"""The farm's tables and database sessions.

The database is the source of truth for what happened: every experiment, run,
stage, metric, eval row, artifact and worker. SQLite under FARM_HOME is the
embedded default (WAL + busy timeout so several workers and the UI can write at
once); PostgreSQL when DATABASE_URL says so. The schema is owned by the Alembic
migrations in `jobs/migrations`; `migrate()` brings a database up to date.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, Text, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine

from jobs import settings


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time the farm stores is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def seconds_since(moment: datetime | None, now: datetime | None = None) -> float:
    if moment is None:
        return float("inf")
    return ((now or utcnow()) - as_utc(moment)).total_seconds()  # type: ignore[operator]


def server_now(session: Session) -> datetime:
    """The database server's clock, the farm's one clock.

    Heartbeats, claims and every lost or stranded decision read it, never the
    clock of the Mac that writes: a worker whose clock is minutes off (NTP
    off, a laptop back from sleep) would otherwise look lost while it works,
    or see every other worker as lost. SQLite is a file on one machine, so
    there the database's clock is that machine's."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return utcnow()
    moment = session.connection().exec_driver_sql("SELECT now()").scalar_one()
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Sweep(SQLModel, table=True):
    """One submission of a grid: its experiments (one per grid point) share it."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    # The swept knobs, dotted path → values in the order given: {"train.learning_rate": [...]}.
    axes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    spec_yaml: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Experiment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    sweep_id: int | None = Field(default=None, foreign_key="sweep.id", index=True)
    # This experiment's grid point, dotted path → value; empty outside a sweep.
    sweep_point: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    name: str = Field(index=True)
    fingerprint: str = Field(index=True)
    base_model: str = Field(index=True)
    dataset: str = Field(index=True)
    suite: str = Field(index=True)
    spec_yaml: str = Field(sa_column=Column(Text, nullable=False))
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Who submitted it (the OS user of `farm submit`, "web" for the form), for the
    # per-submitter queue quota; None on rows written before it was kept.
    submitter: str | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Run(SQLModel, table=True):
    """One experiment × one seed."""

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    seed: int
    fingerprint: str = Field(index=True)
    status: str = Field(default="queued", index=True)
    host: str | None = None  # the host id of the Mac whose disk holds its artifacts
    created_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None


class Stage(SQLModel, table=True):
    """One node of a run's DAG: train, fuse, quantize or eval of one variant."""

    __table_args__ = (
        Index("ix_stage_kind_status", "kind", "status"),
        Index("ix_stage_run_kind_val_loss", "run_id", "kind", "val_loss"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    kind: str  # train | fuse | quantize | eval
    # adapter | fused | q4 | best | base, or a checkpoint's `jobs.dag.checkpoint_variant`
    variant: str = ""
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    depends_on: int | None = Field(default=None, foreign_key="stage.id")
    status: str = Field(default="waiting", index=True)  # a `jobs.states.StageStatus`
    # Each claim is a new attempt; writes carrying an older number are refused.
    attempt: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    heartbeat_at: datetime | None = None  # the running attempt's worker beat last
    resumed_from: int | None = None  # train: the checkpoint iteration this attempt resumed at
    worker: str | None = None
    rq_job_id: str | None = Field(default=None, index=True)
    queue: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    # Why a train stage stopped before its last iteration (the adherence probe
    # saw the format lock or collapse), e.g. "locked: adherence ≥ 0.90 at 200 and 300".
    early_stop: str | None = Field(default=None, sa_column=Column(Text))
    progress: int | None = None  # iterations (train) or prompts (eval) done
    total: int | None = None
    # Summary of a finished stage, written once, so the leaderboard aggregates
    # over stages instead of millions of eval rows.
    adherence: float | None = None
    n_prompts: int | None = None
    label_counts: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))
    # eval: the prompt ids scored in full, for seed agreement per prompt (seed-lock@k)
    passed_prompts: list[str] | None = Field(default=None, sa_column=Column(JSON))
    hit_max_share: float | None = None
    latency_s: float | None = None  # mean seconds per prompt
    tokens_per_sec: float | None = None
    peak_memory_gb: float | None = None
    size_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))  # fused 30B: > 2 GB
    val_loss: float | None = None  # final val loss (train stage)


class Metric(SQLModel, table=True):
    """A training report as mlx-lm's callback delivered it."""

    id: int | None = Field(default=None, primary_key=True)
    stage_id: int = Field(foreign_key="stage.id", index=True)
    attempt: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    run_id: int = Field(foreign_key="run.id", index=True)
    iteration: int
    train_loss: float | None = None
    val_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_sec: float | None = None
    iterations_per_sec: float | None = None
    peak_memory_gb: float | None = None
    trained_tokens: int | None = None
    # The adherence probe at a checkpoint (train.adherence_probe): the score of a
    # few suite prompts generated with the model in memory, and their labels.
    probe_adherence: float | None = None
    probe_labels: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class EvalResult(SQLModel, table=True):
    """One suite prompt answered by one variant of one run."""

    id: int | None = Field(default=None, primary_key=True)
    stage_id: int = Field(foreign_key="stage.id", index=True)
    attempt: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    run_id: int = Field(foreign_key="run.id", index=True)
    prompt_id: str
    category: str = ""
    expect: str
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    response: str = Field(sa_column=Column(Text, nullable=False))
    label: str
    score: float
    thought: bool = False
    tokens: int = 0
    latency_s: float = 0.0
    hit_max_tokens: bool = False
    # What ended the generation: eos, stop (a suite stop string) or max_tokens;
    # "" on rows written before it was recorded.
    stop_reason: str = Field(default="", sa_column_kwargs={"server_default": ""})


class Artifact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    stage_id: int | None = Field(default=None, foreign_key="stage.id")
    attempt: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    kind: str  # adapter | checkpoint | fused | quantized | log
    variant: str = ""
    iteration: int | None = None
    path: str
    host: str
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    sha256: str = ""
    # A folder's files, relative name → sha256, so an export names the file that
    # changed (None on rows written before it was kept).
    file_sha256: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class StageAttempt(SQLModel, table=True):
    """One claim of a stage by a worker, and how it ended (`AttemptOutcome`)."""

    id: int | None = Field(default=None, primary_key=True)
    stage_id: int = Field(foreign_key="stage.id", index=True)
    attempt: int
    worker: str
    host: str = ""
    outcome: str = "running"
    reason: str | None = Field(default=None, sa_column=Column(Text))
    resumed_from: int | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    # A rank of a gang (`jobs.gang`): where this attempt's rank listens for the
    # ring (ip:port) and the sha256 of the dataset as its worker reads it.
    ring_address: str | None = None
    dataset_sha256: str | None = None


class WorkerRow(SQLModel, table=True):
    __tablename__ = "worker"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    host: str  # the machine's network name
    host_id: str | None = Field(default=None, index=True)  # its disk (`jobs.host_identity`)
    memory_gb: float  # what it offers jobs: on a Mac, the GPU working set
    total_memory_gb: float | None = None  # its RAM (None: registered before this was kept)
    chip: str = ""
    mlx_version: str = ""
    platform: str = ""
    queues: str = ""
    status: str = "idle"
    current_stage_id: int | None = None
    jobs_done: int = 0
    started_at: datetime = Field(default_factory=utcnow)
    last_heartbeat: datetime = Field(default_factory=utcnow)


class Diagnostic(SQLModel, table=True):
    """A preflight finding or a failure pattern detected on a run."""

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int | None = Field(default=None, foreign_key="experiment.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="run.id", index=True)
    fingerprint: str | None = Field(default=None, index=True)
    scope: str = "run"  # preflight | run | config
    pattern: str
    severity: str = "warning"  # error | warning | info
    message: str = Field(sa_column=Column(Text, nullable=False))
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Publication(SQLModel, table=True):
    """A run's variant published to the Hugging Face Hub by `farm publish`,
    recorded only once the upload returned its commit."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    variant: str
    repo: str  # USER/NAME
    revision: str  # the Hub's commit id of the upload
    url: str = ""
    private: bool = False
    published_at: datetime = Field(default_factory=utcnow)


class ExportFile(SQLModel, table=True):
    """The zip an `export` stage made on the worker holding the run's artifacts.

    Its bytes travel to the coordinator through the database, in `ExportChunk`s,
    so the UI and CLI never read a worker's disk; `sha256` is the zip's, taken by
    that worker after it checked every file against the artifact's recorded digest."""

    id: int | None = Field(default=None, primary_key=True)
    stage_id: int = Field(foreign_key="stage.id", unique=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    variant: str
    name: str  # the download's file name, e.g. run-12-adapter.zip
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    sha256: str = ""
    chunks: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class ExportChunk(SQLModel, table=True):
    """One piece (at most `ship.transfer.CHUNK_BYTES`) of an export's zip."""

    id: int | None = Field(default=None, primary_key=True)
    export_id: int = Field(foreign_key="exportfile.id", index=True)
    seq: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SigninState(SQLModel, table=True):
    """The UI's sign-in throttle (failure counts, delays, lock-outs; `web.signin`),
    one row, so a UI restart keeps a lock-out and several UI processes share it.
    `version` is bumped first in every change, which takes the row's write lock."""

    id: int | None = Field(default=None, primary_key=True)
    version: int = 0
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


@event.listens_for(SigninState.__table__, "after_create")
def _the_one_signin_row(table: Any, connection: Any, **_: Any) -> None:
    """The row every UI process updates is made with its table (as migration 0013
    makes it), so no two UI processes race to insert it."""
    connection.execute(table.insert().values(id=1, version=0, state={}, updated_at=utcnow()))


class WorkerCredential(SQLModel, table=True):
    """A Mac's own way into a LAN farm (`farm up --lan`, `farm workers add`): a
    Redis ACL user and a PostgreSQL role of its own, so one Mac can be shut out
    (`farm workers revoke`) without touching the others. Redis keeps nothing on
    disk, so its ACL users are made again from these rows at each start; only
    the password's sha256 is kept, which is what Redis's ACL takes."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    redis_user: str
    redis_password_sha256: str
    db_role: str | None = None  # None: the farm's database is not PostgreSQL
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class Notification(SQLModel, table=True):
    """One message to send (`jobs.notify`): the outbox row of an event, unique by
    key, so a restart never sends it twice; delivered_at once a receiver took it."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # experiment:<id> | run:<id>:stopped_early
    event: str
    experiment_id: int | None = Field(default=None, foreign_key="experiment.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="run.id")
    url: str = Field(sa_column=Column(Text, nullable=False))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    next_try_at: datetime | None = Field(default=None, index=True)
    delivered_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, index=True)


# --- engines and sessions -------------------------------------------------

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the UI) and one writer work at once; the busy timeout
    # makes concurrent writers (several workers) wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Statistics for the planner, refreshed cheaply on connect (SQLite never
    # gathers them by itself; without them it picks poor indexes at scale).
    cursor.execute("PRAGMA optimize=0x10002")
    cursor.close()


def _pg_connect_args() -> dict[str, Any]:
    """libpq settings for a farm whose workers can drop off the network.

    A worker cut off from the coordinator must notice within seconds, not after
    TCP's 15-minute retransmission limit: bounded connects, keepalives, and
    unacknowledged writes failing after 15 s. On the server side, a worker cut
    off in the middle of a transaction must not keep its row locks (the
    reconciler needs them to give its stage away): such a session is ended
    well before the worker would be declared lost, and no statement waits on
    a lock for longer than that either."""
    hold_ms = int(max(settings.lost_after_s() / 2, 1) * 1000)
    return {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 15000,
        "options": f"-c idle_in_transaction_session_timeout={hold_ms} "
        f"-c lock_timeout={max(hold_ms, 15000)}",
    }


def normalize_url(url: str) -> str:
    # Users write postgresql://…; SQLAlchemy's default driver for that is
    # psycopg2, which we do not ship. psycopg 3 is the one installed.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def get_engine(url: str | None = None) -> Engine:
    url = normalize_url(url or settings.database_url())
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.removeprefix("sqlite:///")
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(
                    url, connect_args={"timeout": 30, "check_same_thread": False}
                )
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True, connect_args=_pg_connect_args())
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrate(url: str | None = None, replay: bool = False) -> None:
    """Bring the database schema up to the newest Alembic revision.

    A database with no tables at all gets the models' tables and is stamped at
    the newest revision (Alembic's recipe for a new database): a fraction of the
    time replaying every migration takes, which each new farm, and each test's
    fresh database, would pay. `replay=True` replays them all instead; the test
    that migrations and models agree does, so the two ways give one schema."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    url = normalize_url(url or settings.database_url())
    engine = get_engine(url)  # creates the SQLite folder
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    if not replay and not inspect(engine).get_table_names():
        SQLModel.metadata.create_all(engine)
        command.stamp(config, "head")
    else:
        command.upgrade(config, "head")


def forget_engines_after_fork() -> None:
    """In a forked child, drop the parent's pooled connections without closing
    them (closing would end the parent's sessions), so the child opens its own."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
