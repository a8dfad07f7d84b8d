"""A real LAN in network namespaces: a coordinator host, worker hosts, and cables to cut.

Each host is a network namespace linked to `coord` by its own veth pair, so a
partition is `ip link set <veth> down` inside the worker's namespace: its
packets have nowhere to go, exactly as when a Mac's Wi-Fi drops. The
filesystem stays shared (namespaces split only the network), which plays a
folder every worker mounts over SMB/NFS.

Only 10.23N.x.y addresses (N: the pytest worker, `LAN_OCTET`) and names
with this test's own tag are used; the
host's own Redis and PostgreSQL are never touched. Everything is torn down by
`Network.destroy` and the servers' `stop`, which tolerate half-built states.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from redis import Redis

from tests.support.faults import kill_tree
from tools.local.services import redis_server_binary
from tools.local.tls import TlsFiles

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REDIS_PORT = 6390  # inside coord's own namespace: no clash with any host port
POSTGRES_PORT = 5433
# Each pytest worker (`-n`) has a LAN of its own, so their network tests run
# side by side instead of waiting for each other: gw0 10.231, gw1 10.232, …
LAN_OCTET = 231 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
SUBNET = f"10.{LAN_OCTET}.0.0/16"


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    """Run a command (inside `netns` if given); a failure raises with its stderr."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def coord_address(link: int) -> str:
    """Coordinator's address on link `link` (0: the test host, n: worker n)."""
    return f"10.{LAN_OCTET}.{link}.1"


def peer_address(link: int) -> str:
    return f"10.{LAN_OCTET}.{link}.2"


@dataclass(frozen=True)
class Link:
    """One veth cable: `device` in the peer's namespace, `coord_device` in coord's."""

    number: int
    netns: str | None  # None: the root namespace (the test process)
    device: str
    coord_device: str


class Network:
    """The namespaces and veth pairs of one test; `destroy` removes them all."""

    def __init__(self, workers: list[str]) -> None:
        self.tag = f"lf{uuid.uuid4().hex[:4]}"  # every name carries it: no clash with others
        self.coord = f"{self.tag}-coord"
        self.namespaces: list[str] = []
        self.links: dict[str, Link] = {}
        self.worker_names = workers

    def netns_of(self, worker: str) -> str:
        return f"{self.tag}-{worker}"

    def build(self) -> None:
        self._add_namespace(self.coord)
        with root_network_change():  # the test host's own cable, in the root namespace
            self._link("host", None, 0)
        for number, worker in enumerate(self.worker_names, start=1):
            self._add_namespace(self.netns_of(worker))
            self._link(worker, self.netns_of(worker), number)

    def _add_namespace(self, name: str) -> None:
        sh("ip", "netns", "add", name)  # fails the test (not a skip) without root/iproute2
        self.namespaces.append(name)
        sh("ip", "link", "set", "lo", "up", netns=name)

    def _link(self, peer: str, netns: str | None, number: int) -> None:
        link = Link(number, netns, f"{self.tag}-p{number}", f"{self.tag}-c{number}")
        # Each end is created in its own namespace: a worker's cable never shows
        # in the root namespace, where a browser on another pytest worker would
        # see every interface change as its network changing.
        own = ["netns", netns] if netns else []
        sh("ip", "link", "add", link.device, *own, "type", "veth",
           "peer", "name", link.coord_device, "netns", self.coord)  # fmt: skip
        self.links[peer] = link
        sh("ip", "addr", "add", f"{coord_address(number)}/24", "dev", link.coord_device,
           netns=self.coord)  # fmt: skip
        sh("ip", "link", "set", link.coord_device, "up", netns=self.coord)
        sh("ip", "addr", "add", f"{peer_address(number)}/24", "dev", link.device, netns=netns)
        sh("ip", "link", "set", link.device, "up", netns=netns)

    def route_between_hosts(self) -> None:
        """Let the worker hosts reach each other through coord, a router as a
        LAN's switch is: the ranks of a gang connect to each other directly."""
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=self.coord)
        for name in self.worker_names:
            link = self.links[name]
            sh("ip", "route", "add", SUBNET, "via", coord_address(link.number), netns=link.netns)

    def coord_addresses(self) -> list[str]:
        return [coord_address(link.number) for link in self.links.values()]

    def cut(self, worker: str) -> None:
        """Pull the worker's cable: its side of the veth goes down."""
        link = self.links[worker]
        sh("ip", "link", "set", link.device, "down", netns=link.netns)

    def heal(self, worker: str) -> None:
        link = self.links[worker]
        sh("ip", "link", "set", link.device, "up", netns=link.netns)

    def destroy(self) -> None:
        """Remove the veths and namespaces (deleting one end of a veth removes both)."""
        for link in self.links.values():
            if link.netns is None:
                with root_network_change():
                    sh("ip", "link", "del", link.device, check=False)
            else:
                sh("ip", "link", "del", link.device, netns=link.netns, check=False)
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)
        self.links.clear()
        self.namespaces.clear()


def _reconciler(process: psutil.Process) -> bool:
    try:
        return "jobs.reconcile" in process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


@contextmanager
def one_lan_at_a_time() -> Iterator[None]:
    """Hold this pytest worker's test LAN (`SUBNET`): two test sessions on one
    machine (two checkouts, say) take turns here."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / f"lorafarm-test-lan-{LAN_OCTET}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


_ROOT_NETWORK_LOCK = Path(tempfile.gettempdir()) / "lorafarm-root-network.lock"


@contextmanager
def root_network_change() -> Iterator[None]:
    """Add or remove an interface of this machine's own (root) namespace, once no
    browser test runs: Chromium aborts its pages' connections when the
    machine's network changes (net::ERR_NETWORK_CHANGED), and a page whose
    websocket dropped stays blank. Held for milliseconds."""
    import fcntl

    with open(_ROOT_NETWORK_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def steady_root_network() -> Iterator[None]:
    """For a browser test's whole run: no test adds or removes an interface of
    the root namespace meanwhile (browser tests share it with each other)."""
    import fcntl

    with open(_ROOT_NETWORK_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def private_tempdir(prefix: str) -> Path:
    """A temp dir outside pytest's root-only tree, so the postgres user can reach it."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class CoordRedis:
    """redis-server inside coord, password and AOF on, config through stdin
    (the password never appears on a command line)."""

    def __init__(self, network: Network, workdir: Path, tls: TlsFiles | None = None) -> None:
        self.network = network
        self.workdir = workdir
        self.tls = tls  # TLS only, with the coordinator's certificate (`farm tls`)
        self.password = uuid.uuid4().hex
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, link: int, ca: Path | None = None) -> str:
        """The URL a host on `link` uses; with TLS, trusting `ca` (default: the farm's)."""
        if self.tls is None:
            return f"redis://:{self.password}@{coord_address(link)}:{REDIS_PORT}/0"
        trusted = ca or self.tls.ca
        return (f"rediss://:{self.password}@{coord_address(link)}:{REDIS_PORT}/0"
                f"?ssl_cert_reqs=required&ssl_ca_certs={trusted}")  # fmt: skip

    def start(self) -> None:
        ports = [f"port {REDIS_PORT}"]
        if self.tls is not None:
            ports = ["port 0", f"tls-port {REDIS_PORT}", f"tls-cert-file {self.tls.cert}",
                     f"tls-key-file {self.tls.key}", f"tls-ca-cert-file {self.tls.ca}",
                     "tls-auth-clients no"]  # fmt: skip
        config = [
            f"bind {' '.join(self.network.coord_addresses())}",
            *ports,
            f"dir {self.workdir}",
            "appendonly yes",
            'save ""',
            f"logfile {self.workdir / 'redis.log'}",
            f"requirepass {self.password}",
        ]
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.network.coord, redis_server_binary(), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write("\n".join(config).encode() + b"\n")
        self.process.stdin.close()
        wait_for(lambda: Redis.from_url(self.url(0), socket_timeout=2).ping(), "coord Redis")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_tree(self.process.pid)
        self.process = None


class CoordPostgres:
    """A PostgreSQL cluster of the test's own, initdb'd in a temp dir and run
    inside coord as the postgres user; trust auth for the namespaces' subnet."""

    def __init__(
        self,
        network: Network,
        workdir: Path,
        tls: TlsFiles | None = None,
        passwords: bool = False,
    ) -> None:
        self.network = network
        self.workdir = workdir
        self.tls = tls  # TLS only (hostssl), with the coordinator's certificate
        # `passwords`: only postgres is trusted (over coord's loopback too, for
        # `farm up --lan`); every other role (a Mac's) logs in with its password.
        self.passwords = passwords
        self.data = workdir / "data"
        self.bin = Path("/usr/lib/postgresql/15/bin")
        self.started = False

    def url(self, link: int, database: str = "lorafarm", ca: Path | None = None) -> str:
        url = f"postgresql://postgres@{coord_address(link)}:{POSTGRES_PORT}/{database}"
        if self.tls is None:
            return url
        return f"{url}?sslmode=verify-full&sslrootcert={ca or self.tls.ca}"

    def _as_postgres(self, *argv: str, netns: str | None = None) -> str:
        return sh("runuser", "-u", "postgres", "--", *argv, netns=netns)

    def start(self) -> None:
        shutil.chown(self.workdir, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth=trust", "--no-sync", "-E", "UTF8")  # fmt: skip
        addresses = ",".join(self.network.coord_addresses() + ["127.0.0.1"] * self.passwords)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '{addresses}'\nport = {POSTGRES_PORT}\n"
                f"unix_socket_directories = '{self.workdir}'\nfsync = off\n"
            )
        if self.tls is not None:  # its own copies: the server reads them as postgres
            for name, source in (("server.pem", self.tls.cert), ("server.key", self.tls.key)):
                shutil.copy(source, self.workdir / name)
                shutil.chown(self.workdir / name, "postgres", "postgres")
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(f"ssl = on\nssl_cert_file = '{self.workdir / 'server.pem'}'\n"
                           f"ssl_key_file = '{self.workdir / 'server.key'}'\n")  # fmt: skip
        with open(self.data / "pg_hba.conf", "a") as hba:
            kind = "hostssl" if self.tls is not None else "host"
            if self.passwords:
                hba.write(f"host all postgres 127.0.0.1/32 trust\n"
                          f"{kind} all postgres {SUBNET} trust\n"
                          f"{kind} all all {SUBNET} scram-sha-256\n")  # fmt: skip
            else:
                hba.write(f"{kind} all all {SUBNET} trust\n")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.workdir / "postgres.log"), "-w", "-t", "60", "start",
                          netns=self.network.coord)  # fmt: skip
        self.started = True
        import psycopg

        with psycopg.connect(self.url(0, "postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE lorafarm")

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D",
                 str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            self.started = False


class NetnsWorkers:
    """`farm worker` processes, each inside its own host's namespace with its own
    FARM_HOME; killed with their whole trees at teardown."""

    def __init__(self, network: Network, root: Path) -> None:
        self.network = network
        self.root = root
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def home(self, name: str) -> Path:
        return self.root / f"{name}-home"

    def log_path(self, name: str) -> Path:
        return self.root / f"worker-{name}.log"

    def start(
        self, name: str, env: dict[str, str], host: str | None = None, extra: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        """Start worker `name` on its own host, or on `host` (another worker's
        namespace and FARM_HOME: a second worker process on the same Mac);
        `extra`: more of `farm worker`'s options (`--join TOKEN`)."""
        host = host or name
        argv = [sys.executable, "-m", "tools.cli", "worker", "--name", name, "--memory-gb", "16",
                *extra]  # fmt: skip
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.network.netns_of(host), *argv],
            env={**worker_base_env(), "FARM_HOME": str(self.home(host)), **env},
            stdout=open(self.log_path(name), "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def children(self, name: str) -> list[psutil.Process]:
        """The worker's live descendants that run work (its horse, the stage's MLX
        child), not its reconciler, which lives as long as the worker."""
        try:
            tree = psutil.Process(self.processes[name].pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        alive = [p for p in tree if _status(p) not in (psutil.STATUS_ZOMBIE, "gone")]
        return [p for p in alive if not _reconciler(p)]

    def zombies(self, name: str) -> list[int]:
        """Descendants that ended and were never reaped."""
        try:
            tree = psutil.Process(self.processes[name].pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p.pid for p in tree if _status(p) == psutil.STATUS_ZOMBIE]

    def tree(self, name: str) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.processes[name].pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    @contextmanager
    def frozen(self, name: str) -> Iterator[None]:
        """The worker's whole tree stopped for a moment (SIGSTOP), so a test can
        pick the instant of a cut: between two DB transactions, or inside one."""
        tree = self.tree(name)
        for process in tree:
            _signal(process, signal.SIGSTOP)
        try:
            yield
        finally:
            for process in tree:
                _signal(process, signal.SIGCONT)

    def stop_all(self) -> None:
        """SIGKILL every worker's tree at once, then wait for them together."""
        tree: list[psutil.Process] = []
        for process in self.processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(process.pid)
                tree += [root, *root.children(recursive=True)]
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # anything that left the tree
        psutil.wait_procs(tree, timeout=10)
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        process.send_signal(signum)
    except psutil.NoSuchProcess:
        pass


def _status(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.NoSuchProcess:
        return "gone"


def worker_base_env() -> dict[str, str]:
    """The test's environment without any farm or service setting of its own."""
    dropped = ("REDIS_URL", "DATABASE_URL", "REDIS_PASSWORD")
    return {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("FARM_")}


def wait_for(probe, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Until `probe()` stops raising."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not come up: {exc!r}") from exc
            time.sleep(0.1)


# What `capture` runs inside coord: every frame on one device, appended to a file.
_SNIFFER = """
import signal, socket, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
sock.bind((sys.argv[1], 0))
with open(sys.argv[2], "ab", buffering=0) as out:
    print("listening", flush=True)
    while True:
        out.write(sock.recv(65535))
"""


@contextmanager
def capture(network: Network, worker: str, path: Path) -> Iterator[Path]:
    """Every frame that crosses `worker`'s cable, as the coordinator's side of
    it sees them, written raw to `path` while the block runs (a packet
    capture, as tcpdump would take, without tcpdump)."""
    link = network.links[worker]
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", network.coord, sys.executable, "-c", _SNIFFER,
         link.coord_device, str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "listening"
    try:
        yield path
    finally:
        sniffer.terminate()
        sniffer.wait(timeout=10)


def send_marker(network: Network, worker: str, marker: str) -> None:
    """A UDP datagram in clear text from `worker` to the coordinator: what a
    capture must see, so that not seeing a secret means something."""
    target = (coord_address(network.links[worker].number), 9)
    code = (f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto("
            f"{marker.encode()!r}, {target!r})")  # fmt: skip
    sh(sys.executable, "-c", code, netns=network.netns_of(worker))
