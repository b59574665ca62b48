"""The service benchmark: ``bulkhead serve`` under a C load generator.

    .venv/bin/python benchmarks/service.py           # full run, about 15 minutes
    .venv/bin/python benchmarks/service.py --quick   # smoke run, a minute or two
    .venv/bin/python benchmarks/service.py --only single,batch

Every server is a real process on 127.0.0.1 and a free port, started before
anything is timed; the load comes from ``wrk`` (a C program, Debian's
``wrk`` package; ``make bench`` installs it) with ``_service_post.lua``, or,
for the end-to-end and memory parts, from a few :class:`bulkhead.service.
AsyncClient` tasks sending batches of 1,000 to 10,000 jobs, where the
client's cost per job is small against the server's.

Parts (``--only``):

single
    ``POST /jobs`` of ``{"type": "add", "args": {"x": 1, "y": 2}}``, ``wrk
    -t1 -c50``, interleaved rounds, against four servers in the same run: a
    bare Starlette endpoint on hypercorn's trio worker (parse, answer 202:
    the ceiling every other server is a ratio of), a bare FastAPI endpoint
    validating the service's own request model, ``bulkhead serve --journal
    :memory:`` and ``bulkhead serve`` with its SQLite journal
    (``synchronous=FULL``). Requests per second, p50/p99 latency, answers
    that are not 202 (any flags the run). The bare endpoint is also driven
    with more threads and connections, with the CPU each process used, to
    show that the server, not wrk, is the limit.
batch
    ``POST /jobs/batch`` of 1, 10, 100 and 1,000 jobs per request (``wrk
    -t1 -c16``), each size against a fresh SQLite-journal server: durable
    jobs accepted per second against batch size. The jobs are runnable, so
    the server runs them while it accepts more, as it would in service.
e2e
    100,000 trivial jobs submitted in batches of 1,000 by 4 tasks, timed
    from the first request until ``GET /stats`` counts the last one
    ``succeeded``.
instances
    One queue in three configurations, side by side in the same run: SQLite
    (one instance), PostgreSQL with one instance, PostgreSQL with two (two
    ``bulkhead serve`` processes on one database). PostgreSQL is a server of
    its own in a temp dir (``tests/_postgres_server.py``, Debian's
    ``postgresql`` package: ``make bench`` installs it) with ``fsync``,
    ``full_page_writes`` and ``synchronous_commit`` on, checked before
    anything is timed. For each: single submissions accepted per second
    (``wrk -t1 -c50``, one wrk per instance, summed), batches of 1,000
    (``wrk -t1 -c4`` per instance), each measurement on fresh servers and a
    fresh queue in interleaved rounds; then the e2e run (4 AsyncClient tasks
    per instance), timed until the whole queue has every job ``succeeded``.
    Ratios two instances / one and PostgreSQL / SQLite; the CPU every
    process group used (servers, PostgreSQL's processes, wrk, this script,
    the rest of the machine) and PostgreSQL's write transactions, which show
    what limits each figure on this machine; the disk's ``fdatasync`` rate.
profile (not in the default parts)
    ``py-spy record`` of ``bulkhead serve`` with its SQLite journal under
    ``wrk -t1 -c50``: the share of its CPU samples per layer (HTTP parsing,
    FastAPI, validation, the service core, the journal, the job's run...),
    see ``_service_profile.py``. Needs py-spy on PATH (``pip install
    py-spy``).
memory
    Server RSS after a warm-up with an empty backlog, then with a backlog of
    1,000,000 queued rows (``sleep`` jobs of an hour in a pool of two
    workers), built through the server's own API in batches of 10,000; then
    SIGKILL and a restart on that journal: seconds until it answers, and its
    RSS.

Results go to ``benchmarks/results/service.json`` and ``.md`` (a ``--quick``
run writes to the temp dir instead; a full run of some parts only to
``service-<parts>.json``, e.g. ``service-instances.json``, so that
``service.json`` keeps the last run of all of them), with the load average
at the start and the end; the table is printed too. Ctrl-C or SIGTERM stops
every server and PostgreSQL the run started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from bulkhead.service import AsyncClient, RemoteError, Submission

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
LUA = HERE / "_service_post.lua"
BARE = HERE / "_service_bare.py"
REGISTRY = "examples.service_jobs:registry"
POOLS = "low=2,normal=4,high=8,urgent=2"
START_TIMEOUT = 60.0
MIB = 1024 * 1024
ADD = {"type": "add", "args": {"x": 1, "y": 2}}

TARGETS = {
    "journal_vs_fastapi": 0.85,
    "batch_1000_per_second": 10_000,
    "e2e_per_second": 3_000,
    "backlog_rss_mib": 50,
    # Issue 18: one queue on PostgreSQL, one and two instances.
    "instances_processed_ratio": 1.6,
    "postgresql_batch_1000_per_second": 10_000,
}


@dataclass(frozen=True)
class Settings:
    quick: bool
    duration: int  # seconds per wrk run
    repeat: int  # interleaved rounds of the single part
    threads: int  # wrk -t of the single part
    connections: int  # wrk -c of the single part
    saturation: tuple[tuple[int, int], ...]  # more (threads, connections) on bare
    batch_sizes: tuple[int, ...]
    batch_connections: int
    instance_batch_connections: int  # wrk -c per instance, batches of 1,000
    e2e_jobs: int
    e2e_batch: int
    submitters: int  # concurrent AsyncClient tasks of e2e and memory
    backlog: int
    backlog_batch: int


FULL = Settings(
    quick=False,
    duration=5,
    repeat=3,
    threads=1,
    connections=50,
    saturation=((1, 10), (2, 100)),
    batch_sizes=(1, 10, 100, 1000),
    batch_connections=16,
    instance_batch_connections=4,
    e2e_jobs=100_000,
    e2e_batch=1000,
    submitters=4,
    backlog=1_000_000,
    backlog_batch=10_000,
)

QUICK = Settings(
    quick=True,
    duration=1,
    repeat=1,
    threads=1,
    connections=50,
    saturation=((2, 100),),
    batch_sizes=(1, 100, 1000),
    batch_connections=16,
    instance_batch_connections=4,
    e2e_jobs=5_000,
    e2e_batch=1000,
    submitters=4,
    backlog=20_000,
    backlog_batch=5_000,
)

PARTS = ("single", "batch", "e2e", "instances", "memory")
OPTIONAL_PARTS = ("profile",)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- measuring


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [0] is the state,
    [1] the parent, [11:15] utime, stime, cutime, cstime in clock ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU seconds process ``pid`` (all its threads) used so
    far; ``reaped``: plus that of the children it has waited for."""
    fields = _proc_stat(pid)
    ticks = sum(int(f) for f in fields[11 : 15 if reaped else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``, its live children and the children it reaped:
    a PostgreSQL postmaster and every backend, including those that exited."""
    total = cpu_seconds(pid, reaped=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):  # gone meanwhile
                if int(_proc_stat(int(entry.name))[1]) == pid:
                    total += cpu_seconds(int(entry.name))
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle, not
    waiting for I/O) since boot, whoever used them."""
    with Path("/proc/stat").open() as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def filesystem(path: Path) -> str:
    """The type and device of the file system ``path`` is on (an ``fsync``
    on tmpfs costs nothing, so durable figures must say where they wrote)."""
    best = ("", "?", "?")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
        if inside and len(mount) >= len(best[0]):
            best = (mount, kind, device)
    return f"{best[1]} ({best[2]})"


def fdatasyncs_per_second(folder: Path, seconds: float = 1.0) -> float:
    """How many 8 KiB write + ``fdatasync`` rounds the disk under ``folder``
    does per second, one after another: what one WAL flush costs at least,
    so what bounds commits that each wait for their own."""
    path = folder / "fdatasync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block, count = b"\0" * 8192, 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()


def _postgres_sql(url: str, statement: str) -> Any:
    """Run one statement outside a transaction; its first row's first value."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement)
        row = cursor.fetchone() if cursor.description else None
        return row[0] if row else None


class Meter:
    """What one measurement used: CPU per process group and, with
    ``postgres`` (a ``tests._postgres_server.PostgresServer``), the write
    transactions and WAL bytes of the whole PostgreSQL cluster.

    Groups: ``servers``; ``postgresql`` (the postmaster and every backend,
    those that exited included); ``client`` (this process: its AsyncClient
    submissions and ``/stats`` polls); ``wrk`` when given to :meth:`stop`;
    ``others``, the machine's busy time none of these used (other users'
    processes, interrupts); ``idle``, the cores nobody used. Each in cores:
    1.0 is one core busy all along."""

    def __init__(self, servers: Sequence[Server], postgres: Any = None) -> None:
        self.servers = servers
        self.postgres = postgres
        self.postmaster: int | None = None
        if postgres is not None:
            pid = (postgres.data / "postmaster.pid").read_text().split()[0]
            self.postmaster = int(pid)
        self._before: dict[str, float] = {}
        self._started = 0.0

    def _read(self) -> dict[str, float]:
        used = {
            "servers": sum(server.cpu_seconds() for server in self.servers),
            "client": time.process_time(),
            "machine": machine_cpu_seconds(),
        }
        if self.postmaster is not None:
            used["postgresql"] = tree_cpu_seconds(self.postmaster)
            # The next transaction id (none is taken to read it), and the
            # WAL's position in bytes: exact, unlike the statistics views.
            used["transactions"] = _postgres_sql(
                self.postgres.url(),
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
            )
            used["wal_bytes"] = _postgres_sql(
                self.postgres.url(), "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
            )
        return used

    def start(self) -> None:
        self._before = self._read()
        self._started = time.perf_counter()

    def stop(self, **apart: float) -> dict[str, Any]:
        """Since :meth:`start`: ``seconds``, ``cpu`` (cores per group; ``apart``
        gives CPU seconds of groups measured otherwise, wrk) and, on
        PostgreSQL, write ``transactions_per_second`` and ``wal_mib_per_second``.
        """
        wall = time.perf_counter() - self._started
        after = self._read()
        used = {key: float(after[key] - self._before[key]) for key in after}
        transactions = used.pop("transactions", None)
        wal_bytes = used.pop("wal_bytes", None)
        used.update(apart)
        machine = used.pop("machine")
        cpu = {key: seconds / wall for key, seconds in used.items()}
        cpu["others"] = max(machine - sum(used.values()), 0.0) / wall
        cpu["idle"] = max((os.cpu_count() or 1) - machine / wall, 0.0)
        result: dict[str, Any] = {"seconds": wall, "cpu": cpu}
        if transactions is not None and wal_bytes is not None:
            result["transactions_per_second"] = transactions / wall
            result["wal_mib_per_second"] = wal_bytes / MIB / wall
        return result


# ---------------------------------------------------------------- servers


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")}
    # The servers import examples/ and, if bulkhead is not installed, src/.
    paths = [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def bulkhead_command(journal: str, *extra: str) -> list[str]:
    """``bulkhead serve`` of the example registry on a free port."""
    return [
        *(sys.executable, "-m", "bulkhead", "serve", REGISTRY, "--port", "0"),
        *("--pools", POOLS, "--journal", journal, *extra),
    ]


class Server:
    """A server process whose output goes to ``log``; ``url`` once it logged
    ``{"event": "listening", "urls": [...]}``."""

    def __init__(self, name: str, command: Sequence[str], log: Path) -> None:
        self.name = name
        self.log = log
        started = time.perf_counter()
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=out, env=_environment()
            )
        self.url = self._wait_listening()
        self.start_seconds = time.perf_counter() - started

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if (
                        isinstance(event, dict)
                        and event.get("event") == "listening"
                        and event.get("pid", self.pid) == self.pid
                    ):
                        return str(event["urls"][0])
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server has used so far."""
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, float]:
        """RSS now and its peak (VmHWM), in MiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
        return {"rss_mib": out["VmRSS"], "peak_mib": out["VmHWM"]}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def running(name: str, command: Sequence[str], folder: Path) -> Iterator[Server]:
    folder.mkdir(parents=True, exist_ok=True)
    server = Server(name, command, folder / f"{name}.log")
    try:
        yield server
    finally:
        server.stop()


SINGLE_SERVERS: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
    "bare_starlette": (
        "bare Starlette (hypercorn-trio), parse + 202",
        lambda d: [sys.executable, str(BARE), "starlette"],
    ),
    "bare_fastapi": (
        "bare FastAPI, JobSubmission validated + 202",
        lambda d: [sys.executable, str(BARE), "fastapi"],
    ),
    "bulkhead_memory": (
        "bulkhead serve --journal :memory:",
        lambda d: bulkhead_command(":memory:"),
    ),
    "bulkhead_journal": (
        "bulkhead serve, SQLite journal (synchronous=FULL)",
        lambda d: bulkhead_command(str(d / "journal.sqlite3")),
    ),
}


# ---------------------------------------------------------------- wrk


def wrk(
    server: Server,
    body: Path,
    *,
    threads: int,
    connections: int,
    duration: int,
    path: str = "/jobs",
) -> dict[str, Any]:
    """One wrk run against ``server``: its WRKJSON summary plus the rate of
    202 answers, and the CPU share wrk and the server used."""
    (result,) = wrk_together(
        [server],
        body,
        threads=threads,
        connections=connections,
        duration=duration,
        path=path,
    )
    return result


def wrk_together(
    servers: Sequence[Server],
    body: Path,
    *,
    threads: int,
    connections: int,
    duration: int,
    path: str = "/jobs",
) -> list[dict[str, Any]]:
    """One wrk process per server, all started at once: like :func:`wrk`,
    a result per server (several instances of one queue, each under its own
    load generator)."""
    runs = []  # (wrk's command, its output file) per server
    with contextlib.ExitStack() as stack:
        for server in servers:
            command = [
                *("wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s"),
                *("--timeout", "60s", "-s", str(LUA), server.url),
                *("--", str(body), path),
            ]
            runs.append((command, stack.enter_context(tempfile.TemporaryFile())))
        cpu = [server.cpu_seconds() for server in servers]
        started = time.perf_counter()
        processes = [
            subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            for command, out in runs
        ]
        ends = [os.wait4(process.pid, 0)[1:] for process in processes]
        wall = time.perf_counter() - started
        used = [s.cpu_seconds() - c for s, c in zip(servers, cpu, strict=True)]
        results = []
        for (command, out), (status, usage), server_cpu in zip(
            runs, ends, used, strict=True
        ):
            out.seek(0)
            text = out.read().decode(errors="replace")
            lines = [x for x in text.splitlines() if x.startswith("WRKJSON ")]
            if status != 0 or not lines:
                raise RuntimeError(
                    f"wrk failed ({status}): {' '.join(command)}\n{text}"
                )
            result: dict[str, Any] = json.loads(lines[0].removeprefix("WRKJSON "))
            seconds = result["duration_us"] / 1e6
            accepted = result["statuses"].get("202", 0)
            errors = sum(result["errors"].values())
            result.update(
                threads=threads,
                connections=connections,
                per_second=accepted / seconds,
                # Robust to a machine shared with others: requests per second
                # of CPU the server process (all its threads) got in the run.
                per_cpu_second=accepted / server_cpu if server_cpu else 0.0,
                not_202=result["requests"] - accepted + errors,
                server_cpu=server_cpu / wall,
                wrk_cpu=(usage.ru_utime + usage.ru_stime) / wall,
                wrk_cpu_seconds=usage.ru_utime + usage.ru_stime,
            )
            results.append(result)
    return results


def _body(folder: Path, name: str, payload: Any) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, separators=(",", ":")))
    return path


# ---------------------------------------------------------------- parts


def run_single(s: Settings, folder: Path) -> dict[str, Any]:
    body = _body(folder, "add", ADD)
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in SINGLE_SERVERS}
    saturation: dict[str, list[dict[str, Any]]] = {
        f"t{t}c{c}": [] for t, c in ((s.threads, s.connections), *s.saturation)
    }
    with contextlib.ExitStack() as stack:
        servers = {
            key: stack.enter_context(running(key, command(folder), folder / key))
            for key, (_, command) in SINGLE_SERVERS.items()
        }
        log("  single: servers up; warming up (1 s each, not timed)")
        for server in servers.values():
            wrk(server, body, threads=1, connections=10, duration=1)
        _settle_single(servers)
        keys = list(SINGLE_SERVERS)
        for r in range(s.repeat):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            for key in order:
                result = wrk(
                    servers[key],
                    body,
                    threads=s.threads,
                    connections=s.connections,
                    duration=s.duration,
                )
                runs[key].append(result)
                log(
                    f"  single {r + 1}/{s.repeat} {key}: {result['per_second']:,.0f}/s"
                    f" (server CPU {result['server_cpu']:.0%})"
                )
                if key == "bare_starlette":
                    saturation[f"t{s.threads}c{s.connections}"].append(result)
                _settle_single(servers)
            for t, c in s.saturation:
                result = wrk(
                    servers["bare_starlette"],
                    body,
                    threads=t,
                    connections=c,
                    duration=s.duration,
                )
                saturation[f"t{t}c{c}"].append(result)
                log(
                    f"  single {r + 1}/{s.repeat} bare_starlette -t{t} -c{c}: "
                    f"{result['per_second']:,.0f}/s (server CPU "
                    f"{result['server_cpu']:.0%}, wrk CPU {result['wrk_cpu']:.0%})"
                )
    results = {}
    for key, (label, _) in SINGLE_SERVERS.items():
        results[key] = {"label": label, **_summary(runs[key])}
    bare = results["bare_starlette"]["per_second"]
    fastapi = results["bare_fastapi"]["per_second"]
    bare_cpu = results["bare_starlette"]["per_cpu_second"]
    fastapi_cpu = results["bare_fastapi"]["per_cpu_second"]
    for result in results.values():
        result["vs_bare"] = _ratio(result["per_second"], bare)
        result["vs_fastapi"] = _ratio(result["per_second"], fastapi)
        result["vs_bare_cpu"] = _ratio(result["per_cpu_second"], bare_cpu)
        result["vs_fastapi_cpu"] = _ratio(result["per_cpu_second"], fastapi_cpu)
    return {
        "wrk": f"wrk -t{s.threads} -c{s.connections} -d{s.duration}s",
        "repeat": s.repeat,
        "body": ADD,
        "pools": POOLS,
        "results": results,
        "saturation": {key: _summary(value) for key, value in saturation.items()},
    }


def _settle_single(servers: Mapping[str, Server]) -> None:
    """Let the bulkhead servers run the jobs they accepted, which they do
    after the load too (a saturated server accepts before it runs): left
    running, that backlog would take CPU from the next server measured."""
    for key, server in servers.items():
        if key.startswith("bulkhead"):
            _settle([server])


def _ratio(rate: float, baseline: float) -> float:
    return rate / baseline if baseline else 0.0  # a baseline with no 202 is flagged


MEASURED = ("cpu", "transactions_per_second", "wal_mib_per_second")
"""What a :class:`Meter` adds to a result."""


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median run by rate; every run's rate; answers that were not 202."""
    ordered = sorted(runs, key=lambda r: r["per_second"])
    median = ordered[len(ordered) // 2]
    return {
        "per_second": statistics.median(r["per_second"] for r in runs),
        "per_second_best": ordered[-1]["per_second"],
        "per_cpu_second": statistics.median(r["per_cpu_second"] for r in runs),
        "p50_ms": median["p50_us"] / 1000,
        "p99_ms": median["p99_us"] / 1000,
        "not_202": sum(r["not_202"] for r in runs),
        "server_cpu": median["server_cpu"],
        "wrk_cpu": median["wrk_cpu"],
        # The instances part's cores per process group and PostgreSQL's
        # writes, of the median run.
        **{key: median[key] for key in MEASURED if key in median},
        "runs": runs,
    }


def run_batch(s: Settings, folder: Path) -> dict[str, Any]:
    results = {}
    for size in s.batch_sizes:
        body = _body(folder, f"batch{size}", {"jobs": [ADD] * size})
        here = folder / f"batch{size}"
        command = bulkhead_command(str(here / "journal.sqlite3"), *_big_bodies())
        with running(f"batch{size}", command, here) as server:
            _warm_up(server.url)
            result = wrk(
                server,
                body,
                threads=1,
                connections=s.batch_connections,
                duration=s.duration,
                path="/jobs/batch",
            )
        result["batch"] = size
        result["jobs_per_second"] = result["per_second"] * size
        result["jobs_per_cpu_second"] = result["per_cpu_second"] * size
        results[str(size)] = result
        log(
            f"  batch {size:>5}: {result['per_second']:,.0f} requests/s = "
            f"{result['jobs_per_second']:,.0f} jobs/s, "
            f"p50 {result['p50_us'] / 1000:.1f} ms, {result['not_202']} not 202"
        )
    return {
        "wrk": f"wrk -t1 -c{s.batch_connections} -d{s.duration}s, POST /jobs/batch",
        "job": ADD,
        "results": results,
    }


def _big_bodies() -> list[str]:
    # A batch of 10,000 jobs is about 500 KB; the default limit is 64 KiB.
    return ["--max-body", str(16 * MIB)]


def _warm_up(url: str) -> None:
    """A small batch and a few single submissions, so that no timed request
    pays for first imports."""

    async def warm_up() -> None:
        await _submit([url], [Submission("add", {"x": 1})] * 10, 10, 1)
        async with AsyncClient(url) as client:
            for _ in range(5):
                await client.submit("add", {"x": 1})

    trio.run(warm_up)


async def _submit(
    urls: Sequence[str], jobs: Sequence[Submission], batch: int, tasks: int
) -> dict[str, Any]:
    """Submit ``jobs`` in batches of ``batch`` from ``tasks`` concurrent
    AsyncClient tasks per server of ``urls`` (one queue's instances), taking
    batches from one shared list; a batch refused as busy waits
    ``retry_after`` and is sent again. Return the seconds taken and the
    count of busy answers."""
    chunks = iter(range(0, len(jobs), batch))
    busy = 0

    async def submitter(client: AsyncClient) -> None:
        nonlocal busy
        for start in chunks:
            chunk = jobs[start : start + batch]
            while True:
                try:
                    await client.submit_many(chunk)
                    break
                except RemoteError as exc:
                    if exc.retry_after is None:
                        raise
                    busy += 1
                    await trio.sleep(exc.retry_after)

    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(AsyncClient(url, timeout=300))
            for url in urls
        ]
        async with trio.open_nursery() as n:
            for _ in range(tasks):
                for client in clients:
                    n.start_soon(submitter, client)
    return {"seconds": time.perf_counter() - started, "busy": busy}


def _succeeded(stats: dict[str, Any]) -> int:
    """Jobs this instance ran that succeeded (its dispatcher's count)."""
    return int(stats["total"]["succeeded"])


def _unfinished(stats: dict[str, Any]) -> int:
    """Jobs of the whole queue not finished yet (queued, due later or
    running, on every instance): the journal's counts."""
    return sum(
        n
        for pool in stats["journal"]["pools"].values()
        for state, n in pool.items()
        if state not in ("succeeded", "failed", "cancelled")
    )


def _stats(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/stats", timeout=30)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def _settle(servers: Sequence[Server], timeout: float = 300) -> None:
    """Wait until the queue the servers share has no unfinished job."""
    deadline = time.monotonic() + timeout
    while _unfinished(_stats(servers[0].url)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the queue did not drain in {timeout} s")
        time.sleep(0.05)


def _process(meter: Meter, s: Settings) -> dict[str, Any]:
    """``s.e2e_jobs`` trivial jobs submitted to every server of one queue
    (``meter.servers``) in batches, timed from the first request until the
    servers count them all ``succeeded`` and the queue has none unfinished
    (polled every 0.1 s)."""
    urls = [server.url for server in meter.servers]

    def progress() -> tuple[int, int]:
        """Jobs the servers ran that succeeded; the queue's unfinished jobs."""
        views = [_stats(url) for url in urls]
        for stats in views:
            if stats["total"]["failed"] or stats["total"]["cancelled"]:
                raise RuntimeError(f"jobs failed or were cancelled: {stats}")
        return sum(_succeeded(stats) for stats in views), _unfinished(views[0])

    base, _ = progress()
    jobs = [Submission("add", {"x": i, "y": 1}) for i in range(s.e2e_jobs)]
    meter.start()
    started = time.perf_counter()
    submitted = trio.run(_submit, urls, jobs, s.e2e_batch, s.submitters)
    done_when_submitted = progress()[0] - base
    drain_started = time.perf_counter()
    while True:
        succeeded, unfinished = progress()
        if succeeded - base >= s.e2e_jobs and not unfinished:
            break
        time.sleep(0.1)
    ended = time.perf_counter()
    used = meter.stop()
    seconds = ended - started
    drained = s.e2e_jobs - done_when_submitted
    return {
        "jobs": s.e2e_jobs,
        "batch": s.e2e_batch,
        "instances": len(urls),
        "submitters": s.submitters * len(urls),
        "submit_seconds": submitted["seconds"],
        "submit_per_second": s.e2e_jobs / submitted["seconds"],
        "busy_answers": submitted["busy"],
        "seconds": seconds,
        "per_second": s.e2e_jobs / seconds,
        # Once submissions stopped competing with the processing for CPU.
        "succeeded_when_submitted": done_when_submitted,
        "drain_per_second": drained / (ended - drain_started) if drained else 0.0,
        **{key: value for key, value in used.items() if key != "seconds"},
    }


def run_e2e(s: Settings, folder: Path) -> dict[str, Any]:
    here = folder / "e2e"
    command = bulkhead_command(str(here / "journal.sqlite3"), *_big_bodies())
    with running("e2e", command, here) as server:
        _warm_up(server.url)
        _settle([server])
        log(f"  e2e: {s.e2e_jobs:,} jobs in batches of {s.e2e_batch:,}")
        result = _process(Meter([server]), s)
    log(
        f"  e2e: submitted in {result['submit_seconds']:.1f} s, all succeeded in "
        f"{result['seconds']:.1f} s = {result['per_second']:,.0f} jobs/s"
    )
    return result


# ---------------------------------------------------------------- instances


@dataclass(frozen=True)
class Setup:
    """A configuration of the instances part: ``instances`` servers sharing
    one queue, in a SQLite file or a PostgreSQL database."""

    key: str
    label: str
    instances: int
    postgresql: bool


SETUPS = (
    Setup("sqlite", "SQLite, one instance", 1, False),
    Setup("pg1", "PostgreSQL, one instance", 1, True),
    Setup("pg2", "PostgreSQL, two instances", 2, True),
)
RATIOS = (("pg2", "pg1"), ("pg1", "sqlite"), ("pg2", "sqlite"))
"""The ratios the instances part reports, as (numerator, denominator)."""
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""PostgreSQL's settings the durable figures need (its defaults)."""


def _postgres_module() -> Any:
    """The tests' PostgreSQL server (``tests/_postgres_server.py``: Debian's
    binaries as the ``postgres`` user, a temp dir, a loopback port), shared
    rather than copied; imported here, as only this part needs it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import _postgres_server

    return _postgres_server


def _postgres_settings(url: str) -> dict[str, str]:
    names = ("server_version", *DURABLE, "wal_sync_method", "shared_buffers")
    settings = {name: str(_postgres_sql(url, f"SHOW {name}")) for name in names}
    if wrong := {k: v for k, v in DURABLE.items() if settings[k] != v}:
        raise RuntimeError(f"durable figures need {wrong}, the server has {settings}")
    return settings


def _per_cpu_second(rate: float, cpu: dict[str, float]) -> float:
    """Jobs per CPU-second of the servers and PostgreSQL together."""
    cores = cpu["servers"] + cpu.get("postgresql", 0.0)
    return rate / cores if cores else 0.0


@contextlib.contextmanager
def _queue(setup: Setup, folder: Path, postgres: Any) -> Iterator[Meter]:
    """A :class:`Meter` of ``setup``'s servers on a fresh queue (a new SQLite
    file or PostgreSQL database), warmed up and drained, after a CHECKPOINT
    so that none falls into the measurement; stopped, and the database
    dropped, at exit."""
    here = Path(tempfile.mkdtemp(prefix=f"{setup.key}-", dir=folder))
    journal = postgres.database() if setup.postgresql else str(here / "j.sqlite3")
    with contextlib.ExitStack() as stack:
        if setup.postgresql:
            name = journal.rsplit("/", 1)[1]
            drop = f'DROP DATABASE "{name}" WITH (FORCE)'
            stack.callback(_postgres_sql, postgres.url(), drop)
        command = bulkhead_command(journal, *_big_bodies())
        servers = [
            stack.enter_context(running(f"{setup.key}-{i}", command, here))
            for i in range(setup.instances)
        ]
        for server in servers:
            _warm_up(server.url)
        _settle(servers)
        _postgres_sql(postgres.url(), "CHECKPOINT")
        yield Meter(servers, postgres if setup.postgresql else None)


def _accept(
    meter: Meter, body: Path, per_request: int, **options: Any
) -> dict[str, Any]:
    """Jobs accepted per second from one wrk per server of ``meter``, all at
    once."""
    meter.start()
    results = wrk_together(meter.servers, body, **options)
    used = meter.stop(wrk=sum(r["wrk_cpu_seconds"] for r in results))
    rate = sum(r["per_second"] for r in results) * per_request
    return {
        "per_second": rate,
        "per_cpu_second": _per_cpu_second(rate, used["cpu"]),
        # The slower instance's latencies.
        "p50_us": max(r["p50_us"] for r in results),
        "p99_us": max(r["p99_us"] for r in results),
        "not_202": sum(r["not_202"] for r in results),
        "server_cpu": sum(r["server_cpu"] for r in results),
        "wrk_cpu": sum(r["wrk_cpu"] for r in results),
        **{key: value for key, value in used.items() if key != "seconds"},
        "instances": results,
    }


def _cores(cpu: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.2f}" for key, value in cpu.items())


def run_instances(s: Settings, folder: Path) -> dict[str, Any]:
    bodies = {
        "single": (_body(folder, "add", ADD), 1, "/jobs", s.connections),
        "batch": (
            _body(folder, "batch1000", {"jobs": [ADD] * 1000}),
            1000,
            "/jobs/batch",
            s.instance_batch_connections,
        ),
    }
    with _postgres_module().postgres_server(fsync=True) as postgres:
        settings = _postgres_settings(postgres.url())
        disk = fdatasyncs_per_second(postgres.base)
        log(
            f"  instances: PostgreSQL {settings}; data on "
            f"{filesystem(postgres.data)}, {disk:,.0f} fdatasync/s"
        )
        accepted: dict[str, dict[str, Any]] = {}
        for phase, (body, per_request, path, connections) in bodies.items():
            runs: dict[str, list[dict[str, Any]]] = {x.key: [] for x in SETUPS}
            for r in range(s.repeat):
                for setup in SETUPS[r % len(SETUPS) :] + SETUPS[: r % len(SETUPS)]:
                    with _queue(setup, folder, postgres) as meter:
                        result = _accept(
                            meter,
                            body,
                            per_request,
                            threads=s.threads,
                            connections=connections,
                            duration=s.duration,
                            path=path,
                        )
                    runs[setup.key].append(result)
                    log(
                        f"  instances {phase} {r + 1}/{s.repeat} {setup.key}: "
                        f"{result['per_second']:,.0f} jobs/s, "
                        f"{result['not_202']} not 202; cores: {_cores(result['cpu'])}"
                    )
            accepted[phase] = {key: _summary(value) for key, value in runs.items()}
        processed = {}
        for setup in SETUPS:
            with _queue(setup, folder, postgres) as meter:
                result = _process(meter, s)
            result["per_cpu_second"] = _per_cpu_second(
                result["per_second"], result["cpu"]
            )
            processed[setup.key] = result
            log(
                f"  instances processed {setup.key}: {result['per_second']:,.0f} "
                f"jobs/s (after submission {result['drain_per_second']:,.0f}/s); "
                f"cores: {_cores(result['cpu'])}"
            )
    rates = {
        "single": {k: v["per_second"] for k, v in accepted["single"].items()},
        "batch": {k: v["per_second"] for k, v in accepted["batch"].items()},
        "processed": {k: v["per_second"] for k, v in processed.items()},
    }
    ratios = {
        phase: {f"{a}_vs_{b}": _ratio(by[a], by[b]) for a, b in RATIOS}
        for phase, by in rates.items()
    }
    for phase, by in ratios.items():
        log(
            f"  instances ratios, {phase}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in by.items())
        )
    return {
        "setups": {x.key: x.label for x in SETUPS},
        "postgresql": settings,
        "filesystem": filesystem(folder),
        "fdatasyncs_per_second": disk,
        "wrk": {
            "single": f"wrk -t{s.threads} -c{s.connections} -d{s.duration}s per "
            "instance, POST /jobs",
            "batch": f"wrk -t{s.threads} -c{s.instance_batch_connections} "
            f"-d{s.duration}s per "
            "instance, POST /jobs/batch of 1,000",
        },
        "repeat": s.repeat,
        "pools": POOLS,
        "accepted": accepted,
        "processed": processed,
        "ratios": ratios,
    }


def run_memory(s: Settings, folder: Path) -> dict[str, Any]:
    here = folder / "memory"
    journal = here / "journal.sqlite3"
    command = bulkhead_command(str(journal), *_big_bodies())
    server = Server("memory", command, _log(here, "memory"))
    empty_start = server.start_seconds  # process start to listening, no backlog
    try:
        _warm_up(server.url)
        trio.run(_submit, [server.url], [Submission("add", {"x": 1})] * 1000, 1000, 1)
        _settle([server])
        time.sleep(1)
        empty = server.memory()
        log(f"  memory: empty backlog, RSS {empty['rss_mib']:.1f} MiB")
        sleeper = Submission("sleep", {"seconds": 3600})
        built = trio.run(
            _submit, [server.url], [sleeper] * s.backlog, s.backlog_batch, s.submitters
        )
        log(
            f"  memory: {s.backlog:,} queued jobs in {built['seconds']:.1f} s "
            f"({s.backlog / built['seconds']:,.0f}/s)"
        )
        time.sleep(1)
        backlog = server.memory()
        log(f"  memory: backlog of {s.backlog:,}, RSS {backlog['rss_mib']:.1f} MiB")
    finally:
        server.kill()  # SIGKILL: the backlog stays in the journal
    started = time.perf_counter()
    restarted = Server("memory-restart", command, _log(here, "restart"))
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{restarted.url}/health", timeout=5).is_success:
                    break
            time.sleep(0.01)
        answering = time.perf_counter() - started
        time.sleep(2)
        after_restart = restarted.memory()
        log(
            f"  memory: restarted on the backlog, answering after {answering:.2f} s, "
            f"RSS {after_restart['rss_mib']:.1f} MiB"
        )
    finally:
        restarted.kill()
    return {
        "backlog": s.backlog,
        "built_by": f"the server's POST /jobs/batch, batches of {s.backlog_batch:,}",
        "build_seconds": built["seconds"],
        "build_per_second": s.backlog / built["seconds"],
        "busy_answers": built["busy"],
        "journal_mib": journal.stat().st_size / MIB,
        "empty": empty,
        "with_backlog": backlog,
        "restart_answers_after_seconds": answering,
        "empty_start_seconds": empty_start,
        "after_restart": after_restart,
        "growth_mib": backlog["rss_mib"] - empty["rss_mib"],
        "restart_growth_mib": after_restart["rss_mib"] - empty["rss_mib"],
    }


def run_profile(s: Settings, folder: Path) -> dict[str, Any]:
    import _service_profile

    if shutil.which("py-spy") is None:
        raise RuntimeError("py-spy is not on PATH: pip install py-spy")
    here = folder / "profile"
    body = _body(folder, "add", ADD)
    command = bulkhead_command(str(here / "journal.sqlite3"))
    seconds = max(s.duration * 2, 2)
    with running("profile", command, here) as server:
        wrk(server, body, threads=1, connections=10, duration=1)  # warm-up
        load = subprocess.Popen(
            [
                *("wrk", "-t1", f"-c{s.connections}", f"-d{seconds + 2}s"),
                *("-s", str(LUA), server.url, "--", str(body)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        stacks = _service_profile.record(server.pid, seconds, here / "stacks.txt")
        output, _ = load.communicate()
    result = _service_profile.layers(stacks)
    wrk_line = next(x for x in output.splitlines() if x.startswith("WRKJSON "))
    under = json.loads(wrk_line.removeprefix("WRKJSON "))
    result["per_second_while_profiled"] = (
        under["statuses"].get("202", 0) / under["duration_us"] * 1e6
    )
    result["seconds"] = seconds
    for layer, share in result["layers"].items():
        log(f"  profile: {share:6.1%}  {layer}")
    return result


def _log(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.log"


# ---------------------------------------------------------------- report


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []

    def check(name: str, value: float, target: float, ok: bool) -> None:
        checks.append({"target": name, "value": value, "goal": target, "met": ok})

    single = results.get("single", {}).get("results", {})
    for key, r in single.items():
        ok = not r["not_202"]
        check(f"single: every answer of {key} was 202", r["not_202"], 0, ok)
    if single:
        goal = TARGETS["journal_vs_fastapi"]
        ratio = single["bulkhead_journal"]["vs_fastapi"]
        check(
            "single: SQLite journal / bare FastAPI, req/s", ratio, goal, ratio >= goal
        )
        ratio = single["bulkhead_journal"]["vs_fastapi_cpu"]
        check(
            "single: SQLite journal / bare FastAPI, req per CPU-s",
            ratio,
            goal,
            ratio >= goal,
        )
    batch = results.get("batch", {}).get("results", {})
    if "1000" in batch:
        rate = batch["1000"]["jobs_per_second"]
        goal = TARGETS["batch_1000_per_second"]
        check("batch of 1,000: durable jobs/s", rate, goal, rate >= goal)
    for key, r in batch.items():
        check(f"batch {key}: every answer was 202", r["not_202"], 0, not r["not_202"])
    if "per_second" in results.get("e2e", {}):
        rate = results["e2e"]["per_second"]
        goal = TARGETS["e2e_per_second"]
        check("end to end: jobs/s", rate, goal, rate >= goal)
    instances = results.get("instances", {})
    if "ratios" in instances:
        ratio = instances["ratios"]["processed"]["pg2_vs_pg1"]
        goal = TARGETS["instances_processed_ratio"]
        check(
            "instances: two PostgreSQL instances / one, processed jobs/s",
            ratio,
            goal,
            ratio >= goal,
        )
        goal = TARGETS["postgresql_batch_1000_per_second"]
        for key in ("pg1", "pg2"):
            rate = instances["accepted"]["batch"][key]["per_second"]
            check(
                f"instances: {instances['setups'][key]}, batch of 1,000, durable "
                "jobs/s",
                rate,
                goal,
                rate >= goal,
            )
        for phase, by_setup in instances["accepted"].items():
            for key, r in by_setup.items():
                check(
                    f"instances: {phase} {key}, every answer was 202",
                    r["not_202"],
                    0,
                    not r["not_202"],
                )
    if "growth_mib" in results.get("memory", {}):
        growth = results["memory"]["growth_mib"]
        goal = TARGETS["backlog_rss_mib"]
        check("backlog RSS growth (MiB)", growth, goal, growth <= goal)
    return checks


ANCHORS = (
    "Anchors quoted by issue 18, not measured here: River about 46,000 jobs/s "
    "worked (Apple M2, in-process); an independent durable harness measured "
    "River 501, Oban 284 and procrastinate 269 jobs/s with one insert per job."
)
CORES_LEGEND = {
    "servers": "servers",
    "postgresql": "PostgreSQL",
    "wrk": "wrk",
    "client": "bench client",
    "others": "others",
    "idle": "idle",
}


def _instances_markdown(r: dict[str, Any]) -> list[str]:
    """The instances part's section of the report."""
    pg = r["postgresql"]
    labels = r["setups"]
    accepted, processed = r["accepted"], r["processed"]
    e2e = next(iter(processed.values()))
    out = [
        "",
        "## One queue: SQLite, PostgreSQL with one and two instances (issue 18)",
        "",
        f"PostgreSQL {pg['server_version']} on this machine (fsync={pg['fsync']}, "
        f"synchronous_commit={pg['synchronous_commit']}, full_page_writes="
        f"{pg['full_page_writes']}, wal_sync_method={pg['wal_sync_method']}, "
        f"shared_buffers={pg['shared_buffers']}); SQLite with synchronous=FULL "
        f"for submissions; every journal on {r['filesystem']}, whose disk does "
        f"{r['fdatasyncs_per_second']:,.0f} fdatasync/s one after another. Each "
        "measurement "
        "has fresh servers on a fresh queue (SQLite file or PostgreSQL "
        "database), warmed up, after a CHECKPOINT. Two instances are two "
        "`bulkhead serve` processes on one database, each under its own load: "
        f"single: {r['wrk']['single']}; batch: {r['wrk']['batch']} (median of "
        f"{r['repeat']} interleaved rounds; the jobs run meanwhile, as in "
        f"service). Processed: {e2e['jobs']:,} `add` jobs in batches of "
        f"{e2e['batch']:,} from {e2e['submitters'] // e2e['instances']} AsyncClient "
        "tasks per instance, from the first request until the queue has them "
        "all `succeeded` (one run); *after submission* is the rate once the "
        f"last batch was accepted. Pools {r['pools']}.",
        "",
        "| configuration | single: accepted/s | batch of 1,000: accepted jobs/s "
        "| processed jobs/s | after submission | processed per CPU-s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in labels.items():
        p = processed[key]
        out.append(
            f"| {label} | {accepted['single'][key]['per_second']:,.0f} | "
            f"{accepted['batch'][key]['per_second']:,.0f} | "
            f"{p['per_second']:,.0f} | {p['drain_per_second']:,.0f} | "
            f"{p['per_cpu_second']:,.0f} |"
        )
    out += [
        "",
        "Per CPU-s: jobs per second of CPU the servers and PostgreSQL used.",
        "",
        "| ratio | single | batch | processed |",
        "| --- | ---: | ---: | ---: |",
    ]
    for ratio in r["ratios"]["single"]:
        a, b = ratio.split("_vs_")
        out.append(
            f"| {labels[a]} / {labels[b]} | "
            + " | ".join(
                f"{r['ratios'][phase][ratio]:.2f}"
                for phase in ("single", "batch", "processed")
            )
            + " |"
        )
    out += [
        "",
        f"CPU used, in cores (1.00: one core all along; the machine has "
        f"{os.cpu_count()}). *others*: the machine's busy time none of these "
        "processes used (other users, interrupts); *bench client*: this "
        "script's AsyncClient and its `/stats` polls.",
        "",
        "| measurement | configuration | "
        + " | ".join(CORES_LEGEND.values())
        + " | jobs/s | write transactions/s | jobs per transaction |",
        "| --- | --- | "
        + " | ".join("---:" for _ in CORES_LEGEND)
        + " | ---: | ---: | ---: |",
    ]
    rows = [
        *((f"{phase} (median run)", by) for phase, by in accepted.items()),
        ("processed", processed),
    ]
    for name, by in rows:
        for key, result in by.items():
            cpu = result["cpu"]
            transactions = result.get("transactions_per_second")
            written = "n/a | n/a"
            if transactions:
                per = result["per_second"] / transactions
                written = f"{transactions:,.0f} | {per:,.1f}"
            out.append(
                f"| {name} | {labels[key]} | "
                + " | ".join(f"{cpu.get(k, 0.0):.2f}" for k in CORES_LEGEND)
                + f" | {result['per_second']:,.0f} | {written} |"
            )
    out += [
        "",
        "Write transactions: PostgreSQL transactions that took a transaction "
        "id (each commit of one waits for its WAL flush), over the whole "
        "cluster.",
        "",
        ANCHORS,
    ]
    return out


def markdown(data: dict[str, Any]) -> str:
    out = [
        "# Service benchmark",
        "",
        f"{data['machine']}, Python {data['python']}, {data['when']}, "
        f"{'quick' if data['quick'] else 'full'} run: `{data['command']}`; load "
        f"average (1, 5, 15 min) {data['load']['start']} at its start, "
        f"{data['load']['end']} at its end.",
    ]
    results = data["results"]
    if "single" in results:
        s = results["single"]
        out += [
            "",
            f"## POST /jobs, one job per request ({s['wrk']}, median of {s['repeat']})",
            "",
            "| server | req/s | x bare | x FastAPI | req per CPU-s | x bare | "
            "x FastAPI | p50 ms | p99 ms | not 202 | server CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: |",
        ]
        for r in s["results"].values():
            out.append(
                f"| {r['label']} | {r['per_second']:,.0f} | {r['vs_bare']:.2f} | "
                f"{r['vs_fastapi']:.2f} | {r['per_cpu_second']:,.0f} | "
                f"{r['vs_bare_cpu']:.2f} | {r['vs_fastapi_cpu']:.2f} | "
                f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['not_202']} | "
                f"{r['server_cpu']:.0%} |"
            )
        out += [
            "",
            "req per CPU-s: 202 answers per second of CPU the server process "
            "(all its threads) used; unlike req/s it does not depend on how much "
            "of the machine other processes left the server during its run.",
        ]
        out += [
            "",
            "The bare endpoint under more load generator (median of "
            f"{s['repeat']}): the server, not wrk, is the limit.",
            "",
            "| wrk | req/s | req per CPU-s | p50 ms | p99 ms | server CPU | wrk CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, r in s["saturation"].items():
            out.append(
                f"| {key.replace('t', '-t').replace('c', ' -c')} | "
                f"{r['per_second']:,.0f} | {r['per_cpu_second']:,.0f} | "
                f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['server_cpu']:.0%} | {r['wrk_cpu']:.0%} |"
            )
    if "error" in results.get("single", {}):
        out += ["", f"single: {results['single']['error']}"]
    for part in ("batch", "e2e", "instances", "memory"):
        if "error" in results.get(part, {}):
            out += ["", f"## {part}", "", f"failed: {results[part]['error']}"]
    if "results" in results.get("batch", {}):
        b = results["batch"]
        out += [
            "",
            f"## POST /jobs/batch ({b['wrk']}, SQLite journal)",
            "",
            "| jobs per request | requests/s | jobs/s | jobs per CPU-s | p50 ms "
            "| p99 ms | not 202 | server CPU |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in b["results"].values():
            out.append(
                f"| {r['batch']:,} | {r['per_second']:,.0f} | "
                f"{r['jobs_per_second']:,.0f} | {r['jobs_per_cpu_second']:,.0f} | "
                f"{r['p50_us'] / 1000:.1f} | {r['p99_us'] / 1000:.1f} | "
                f"{r['not_202']} | {r['server_cpu']:.0%} |"
            )
    if "per_second" in results.get("e2e", {}):
        e = results["e2e"]
        out += [
            "",
            "## End to end",
            "",
            f"{e['jobs']:,} `add` jobs in batches of {e['batch']:,} from "
            f"{e['submitters']} AsyncClient tasks: submitted in "
            f"{e['submit_seconds']:.1f} s ({e['submit_per_second']:,.0f}/s), the "
            f"last one succeeded after {e['seconds']:.1f} s: "
            f"**{e['per_second']:,.0f} jobs/s** ({e['busy_answers']} busy answers).",
        ]
    if "ratios" in results.get("instances", {}):
        out += _instances_markdown(results["instances"])
    if "growth_mib" in results.get("memory", {}):
        m = results["memory"]
        out += [
            "",
            "## Memory with a backlog",
            "",
            f"Backlog of {m['backlog']:,} queued `sleep` jobs built through "
            f"{m['built_by']} in {m['build_seconds']:.1f} s "
            f"({m['build_per_second']:,.0f}/s); journal {m['journal_mib']:.0f} MiB.",
            "",
            "| server | RSS MiB | peak MiB |",
            "| --- | ---: | ---: |",
            f"| empty backlog | {m['empty']['rss_mib']:.1f} | "
            f"{m['empty']['peak_mib']:.1f} |",
            f"| with the backlog | {m['with_backlog']['rss_mib']:.1f} | "
            f"{m['with_backlog']['peak_mib']:.1f} |",
            f"| restarted on it | {m['after_restart']['rss_mib']:.1f} | "
            f"{m['after_restart']['peak_mib']:.1f} |",
            "",
            f"Growth: {m['growth_mib']:+.1f} MiB with the backlog, "
            f"{m['restart_growth_mib']:+.1f} MiB after the restart, which answered "
            f"after {m['restart_answers_after_seconds']:.2f} s (from process start; "
            f"on an empty journal it listened after {m['empty_start_seconds']:.2f} "
            "s).",
        ]
    if "layers" in results.get("profile", {}):
        p = results["profile"]
        out += [
            "",
            "## Where a submission's time goes (SQLite journal)",
            "",
            f"py-spy, {p['samples']:,} samples over {p['seconds']} s of wrk -t1 -c50 "
            f"({p['per_second_while_profiled']:,.0f} req/s while sampled); each "
            "sample goes to the layer of its innermost known frame.",
            "",
            "| layer | share of CPU samples |",
            "| --- | ---: |",
            *(f"| {k} | {v:.1%} |" for k, v in p["layers"].items()),
        ]
    out += ["", "## Targets (issues 17 and 18)", ""]
    for t in data["targets"]:
        mark = "met" if t["met"] else "**missed**"
        out.append(f"- {t['target']}: {t['value']:,.2f} (goal {t['goal']:,}) {mark}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


RUNNERS: dict[str, Callable[[Settings, Path], dict[str, Any]]] = {
    "single": run_single,
    "batch": run_batch,
    "e2e": run_e2e,
    "instances": run_instances,
    "memory": run_memory,
    "profile": run_profile,
}


def _terminate(signum: int, frame: object) -> None:
    log("SIGTERM: stopping the servers and PostgreSQL this run started")
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run, a minute or two"
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"parts, of {','.join(PARTS + OPTIONAL_PARTS)} (default: all but "
        f"{','.join(OPTIONAL_PARTS)})",
    )
    parser.add_argument("--output", type=Path, help="where to write the JSON")
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    if unknown := set(parts) - set(PARTS + OPTIONAL_PARTS):
        parser.error(f"unknown parts {sorted(unknown)}: choose from {PARTS}")
    if shutil.which("wrk") is None and {
        "single",
        "batch",
        "instances",
        "profile",
    } & set(parts):
        parser.error("wrk is not installed: apt-get install wrk (make bench does)")
    settings = QUICK if args.quick else FULL
    output = args.output
    if output is None:
        if settings.quick:
            output = Path(tempfile.gettempdir()) / "bulkhead-bench-service.json"
        elif tuple(parts) == PARTS:
            output = RESULTS / "service.json"
        else:  # as run.py does: service.json keeps the last run of every part
            output = RESULTS / f"service-{'-'.join(parts)}.json"
    # SIGTERM unwinds like Ctrl-C: every server and PostgreSQL is stopped.
    signal.signal(signal.SIGTERM, _terminate)
    started = time.perf_counter()
    load = {"start": load_average()}
    results: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="bulkhead-bench-service-") as tmp:
        for part in parts:
            log(f"{part} ...")
            try:
                results[part] = RUNNERS[part](settings, Path(tmp))
            except Exception as exc:  # recorded, printed, and the exit status is 1
                failed = True
                results[part] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"  {part} FAILED: {results[part]['error']}")
    data = {
        "command": " ".join(["benchmarks/service.py", *(argv or sys.argv[1:])]),
        "quick": settings.quick,
        "settings": asdict(settings),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "seconds": time.perf_counter() - started,
        "load": {**load, "end": load_average()},
        "results": results,
    }
    data["targets"] = targets(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=1) + "\n")
    text = markdown(data)
    output.with_suffix(".md").write_text(text)
    print(text)
    log(f"wrote {output} and {output.with_suffix('.md')} in {data['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
