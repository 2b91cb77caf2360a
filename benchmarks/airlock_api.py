"""Airlock API latency under load: 50 concurrent clients against a store holding 10,000 requests.

    .venv/bin/python benchmarks/airlock_api.py [--requests 10000] [--clients 50] [--calls 3000]
                                               [--rates 50 100 200] [--seconds 10] [--backend sqlite postgres]

Seeds the store (an approved project, an author, four independent checkers, N requests in review, each with one
output file), serves the API with uvicorn on a loopback port in its own process, and drives it over keep-alive
HTTP/1.1 connections with a small client of its own (so the load generator costs little of the 2 shared cores):
60% show (each one audited, so a write), 30% list (a page of 100 at a random offset), 10% vote. For each backend:

- floor: ``GET /healthz`` (one read transaction) driven the same way: the framework's and the machine's own cost,
  the baseline measured in the same run;
- closed loop: each of the 50 clients sends its next call as soon as the last one returns. This is the target's
  measurement (p99 under 100 ms with 50 concurrent clients) and it runs the server flat out, so it also gives the
  saturation throughput; by Little's law its mean latency is 50 / throughput;
- open loop (as wrk2): calls start at a fixed rate over up to 50 connections whatever the server's pace, and each
  latency counts from when the call was due, so queueing is not hidden.

Every response is checked (no 5xx; shows and lists must succeed), server CPU per call is read from /proc, and after
the run the audit chain must verify and hold one ``airlock.viewed`` entry per successful show. PostgreSQL runs with
fsync on (the test fixture turns it off), SQLite with ``synchronous=FULL``: both flush each commit to disk.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHECKERS = ["olive", "oscar", "otto", "opal"]
NOW = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)
PREFIX = "/api/v1/airlock"
FAILURES: list[str] = []  # unexpected answers, across the run


def seed(url: str, objects_dir: Path, count: int) -> tuple[dict[str, str], list[str]]:
    from tests.integration.test_api import seed as seed_people
    from tre import services
    from tre.airlock import FileKind, TableKind
    from tre.airlock import service as airlock
    from tre.services import Actor
    from tre.spec import Accreditation, Role, User
    from tre.storage import LocalObjectStore
    from tre.store import Store

    store = Store(url)
    store.migrate()
    tokens = seed_people(store)
    objects = LocalObjectStore(objects_dir)
    with store.transaction() as unit:
        operator = Actor.operator("bench")
        accreditation = (Accreditation(name="t", expires=dt.date(2027, 1, 1)),)
        for name in ("otto", "opal"):
            services.add_user(
                unit,
                operator,
                User(name=name, roles=frozenset({Role.OUTPUT_CHECKER}), accreditations=accreditation),
                now=NOW,
            )
            tokens[name] = services.create_token(unit, operator, name, now=NOW)
        alice = Actor("alice", unit.users.get("alice"))
        ids = []
        for n in range(count):
            request = airlock.create_request(unit, alice, "diabetes-outcomes", title=f"Table {n}", now=NOW)
            airlock.add_file(
                unit,
                alice,
                objects,
                request.id,
                name="t.csv",
                kind=FileKind.OUTPUT,
                data=f"group,count\nA,{25 + n}\n".encode(),
                now=NOW,
                table=TableKind.FREQUENCY,  # counts of 10 or more: passes, so a vote needs no override
            )
            airlock.submit(unit, alice, objects, request.id, now=NOW)
            ids.append(request.id)
    store.close()
    return tokens, ids


def serve(url: str, objects_dir: str, port: int) -> None:
    import uvicorn

    from tre.api import create_app
    from tre.storage import LocalObjectStore
    from tre.store import Store

    app = create_app(Store(url), LocalObjectStore(Path(objects_dir)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- a small keep-alive HTTP/1.1 client ---------------------------------------------------------------------------


class Connection:
    """One keep-alive connection; a call on a connection the server closed while idle is retried once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reconnects = 0
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self, request: bytes) -> tuple[int, bytes]:
        reused = self._streams is not None
        try:
            return await self._exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
            self.reconnects += 1
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._streams
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
        return int(lines[0].split()[1]), body

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def http_request(method: str, path: str, token: str | None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---- the workload -------------------------------------------------------------------------------------------------


@dataclass
class Workload:
    tokens: dict[str, str]
    ids: list[str]
    floor: bool = False  # only /healthz
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def next_call(self) -> tuple[str, bytes]:
        if self.floor:
            return "healthz", http_request("GET", "/healthz", None)
        roll, request_id = self.rng.random(), self.rng.choice(self.ids)
        token = self.tokens[self.rng.choice(CHECKERS)]
        if roll < 0.6:
            return "show", http_request("GET", f"{PREFIX}/requests/{request_id}", token)
        if roll < 0.9:
            offset = self.rng.randrange(0, len(self.ids))
            return "list", http_request("GET", f"{PREFIX}/requests?offset={offset}", token)
        body = json.dumps({"file": "t.csv", "vote": "approve"}).encode()
        return "vote", http_request("POST", f"{PREFIX}/requests/{request_id}/votes", token, body)


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    reconnects: int = 0

    def record(self, kind: str, status: int, body: bytes, seconds: float) -> None:
        """Keep the latency whatever the answer; a 5xx, or a show or list that failed, is reported (and fails the
        run at the end: a fast error must not pass for a fast answer)."""
        if status >= 500 or (kind in ("show", "list", "healthz") and status != 200):
            FAILURES.append(f"{kind}: {status} {body[:200]!r}")
        self.latencies.append(seconds)
        self.statuses[(kind, status)] += 1


async def closed_loop(port: int, work: Workload, clients: int, calls: int) -> Outcome:
    """Each client sends its next call as soon as its last one returns."""
    outcome, remaining = Outcome(), [calls]

    async def client() -> None:
        connection = Connection(port)
        while remaining[0] > 0:
            remaining[0] -= 1
            kind, request = work.next_call()
            started = time.perf_counter()
            status, body = await connection.call(request)
            outcome.record(kind, status, body, time.perf_counter() - started)
        outcome.reconnects += connection.reconnects
        connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return outcome


async def open_loop(port: int, work: Workload, connections: int, rate: float, calls: int) -> Outcome:
    """Calls are due at a fixed rate; each latency counts from when its call was due (no coordinated omission)."""
    outcome, due = Outcome(), asyncio.Queue[float | None]()

    async def worker() -> None:
        connection = Connection(port)
        while (when := await due.get()) is not None:
            kind, request = work.next_call()
            status, body = await connection.call(request)
            outcome.record(kind, status, body, time.perf_counter() - when)
        outcome.reconnects += connection.reconnects
        connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter() + 0.05
    for n in range(calls):
        when = start + n / rate
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        due.put_nowait(when)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return outcome


# ---- running it ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    backend: str
    load: str
    calls: int
    rate: float
    p50: float
    p90: float
    p99: float
    worst: float
    cpu_ms: float
    statuses: str
    shows: int  # successful shows, each of which must have left an audit entry


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(backend: str, load: str, server: subprocess.Popen[bytes], run: Coroutine[None, None, Outcome]) -> Row:
    cpu, started = cpu_seconds(server.pid), time.perf_counter()
    outcome = asyncio.run(run)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(server.pid) - cpu
    latencies = sorted(outcome.latencies)
    n = len(latencies)
    at = lambda q: latencies[min(n - 1, int(n * q))] * 1000  # noqa: E731
    statuses = " ".join(f"{kind}:{status}={count}" for (kind, status), count in sorted(outcome.statuses.items()))
    if outcome.reconnects:
        statuses += f" reconnects={outcome.reconnects}"
    worst, shows = latencies[-1] * 1000, outcome.statuses[("show", 200)]
    return Row(backend, load, n, n / elapsed, at(0.5), at(0.9), at(0.99), worst, cpu / n * 1000, statuses, shows)


def wait_until_up(port: int) -> None:
    async def probe() -> int:
        connection = Connection(port)
        try:
            return (await connection.call(http_request("GET", "/healthz", None)))[0]
        finally:
            connection.close()

    for _ in range(400):
        try:
            if asyncio.run(probe()) == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the API did not start")


def check_audit(url: str, shows: int) -> str:
    """The chain verifies, and every successful show left exactly one ``airlock.viewed`` entry."""
    from tre.store import Store

    store = Store(url)
    try:
        with store.transaction(write=False) as unit:
            result = unit.audit.verify()
            viewed = sum(1 for e in unit.audit.entries() if e.action == "airlock.viewed")
    finally:
        store.close()
    if not result.ok or viewed != shows:
        FAILURES.append(f"audit: chain ok={result.ok} ({result.problem}); {viewed} views audited for {shows} shows")
        return FAILURES[-1]
    return f"audit chain verified ({result.entries:,} entries); {viewed:,} views audited for {shows:,} shows"


def run_backend(name: str, url: str, args: argparse.Namespace, work: Path) -> list[Row]:
    from tests.support.postgres import free_port

    objects = work / f"objects-{name}"
    tokens, ids = seed(url, objects, args.requests)
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", url, str(objects), str(port)])
    rows = []
    try:
        wait_until_up(port)
        floor = Workload(tokens, ids, floor=True)
        rows.append(measure(name, "floor /healthz", server, closed_loop(port, floor, args.clients, args.calls)))
        load = Workload(tokens, ids)
        rows.append(measure(name, f"closed {args.clients}", server, closed_loop(port, load, args.clients, args.calls)))
        for rate in args.rates:
            calls = int(rate * args.seconds)
            run = open_loop(port, load, args.clients, rate, calls)
            rows.append(measure(name, f"open {rate:g}/s", server, run))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{name}: {check_audit(url, sum(row.shows for row in rows))}", flush=True)
    return rows


def durable_postgres() -> tuple[object, str]:
    """A throwaway PostgreSQL server, with fsync and full-page writes turned back on."""
    import sqlalchemy as sa

    from tests.support import postgres

    server = postgres.start_server()
    engine = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("ALTER SYSTEM SET fsync = on")
        conn.exec_driver_sql("ALTER SYSTEM SET full_page_writes = on")
        conn.exec_driver_sql("SELECT pg_reload_conf()")
    engine.dispose()
    return server, server.create_database()


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"\n{args.clients} clients, {args.requests:,} requests in the store, {os.cpu_count()} cores (shared)")
    print("latencies in ms; open-loop latency counts from when each call was due; CPU is the server process's")
    header = f"{'backend':<9} {'load':<15} {'calls':>6} {'calls/s':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}"
    print(f"{header} {'CPU/call':>8} {'p99<100':>7}  responses")
    for r in rows:
        line = f"{r.backend:<9} {r.load:<15} {r.calls:>6} {r.rate:>8.0f} {r.p50:>7.1f} {r.p90:>7.1f} {r.p99:>7.1f}"
        target = "-" if r.load.startswith("floor") else ("yes" if r.p99 < 100 else "NO")
        print(f"{line} {r.worst:>7.1f} {r.cpu_ms:>8.2f} {target:>7}  {r.statuses}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--calls", type=int, default=3_000, help="calls in each closed-loop run")
    parser.add_argument("--rates", type=float, nargs="*", default=[50, 100, 200], help="open-loop calls per second")
    parser.add_argument("--seconds", type=float, default=10, help="length of each open-loop run")
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve[:2], int(args.serve[2]))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="tre-api-bench-") as tmp:
        work = Path(tmp)
        for backend in args.backend:
            print(f"seeding {args.requests:,} requests on {backend}…", flush=True)
            if backend == "sqlite":
                rows += run_backend(backend, f"sqlite+pysqlite:///{work / 'tre.db'}", args, work)
            else:
                server, url = durable_postgres()
                try:
                    rows += run_backend(backend, url, args, work)
                finally:
                    server.stop()  # type: ignore[attr-defined]
    print_table(rows, args)
    if FAILURES:
        print(f"\n{len(FAILURES)} unexpected answers, e.g. {FAILURES[0]}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
