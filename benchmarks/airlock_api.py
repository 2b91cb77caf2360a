"""Airlock API latency under load: 50 concurrent clients against a store holding 10,000 requests.

    .venv/bin/python benchmarks/airlock_api.py [--requests 10000] [--clients 50] [--calls 3000]
                                               [--backend sqlite postgres]

Seeds the store (an approved project, an author, four independent checkers, N requests in review, each with one
output file), serves the API with uvicorn on a loopback port in its own process, and drives it with concurrent
clients: 60% show (each one audited, so a write), 30% list (a page of 100), 10% vote. Prints throughput and
p50/p99 latency per backend. Target: p99 under 100 ms. The clients share the machine's 2 cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHECKERS = ["olive", "oscar", "otto", "opal"]
NOW = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)


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


async def drive(base: str, tokens: dict[str, str], ids: list[str], clients: int, calls: int) -> list[float]:
    latencies: list[float] = []
    rng = random.Random(7)
    remaining = [calls]

    async def client(http: httpx.AsyncClient) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            roll, request_id = rng.random(), rng.choice(ids)
            checker = rng.choice(CHECKERS)
            headers = {"Authorization": f"Bearer {tokens[checker]}"}
            started = time.perf_counter()
            if roll < 0.6:
                response = await http.get(f"/api/v1/airlock/requests/{request_id}", headers=headers)
            elif roll < 0.9:
                response = await http.get(
                    "/api/v1/airlock/requests", params={"offset": rng.randrange(0, len(ids))}, headers=headers
                )
            else:
                body = {"file": "t.csv", "vote": "approve"}
                response = await http.post(f"/api/v1/airlock/requests/{request_id}/votes", json=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code >= 500:
                raise SystemExit(f"server error {response.status_code}: {response.text}")

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies


def wait_until_up(base: str) -> None:
    for _ in range(200):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the API did not start")


def run_backend(name: str, url: str, args: argparse.Namespace, work: Path) -> tuple[str, int, float, float, float]:
    from tests.support.postgres import free_port

    objects = work / f"objects-{name}"
    tokens, ids = seed(url, objects, args.requests)
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", url, str(objects), str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        started = time.perf_counter()
        latencies = asyncio.run(drive(base, tokens, ids, args.clients, args.calls))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return name, len(latencies), len(latencies) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve[:2], int(args.serve[2]))
        return
    from tests.support import postgres

    rows = []
    with tempfile.TemporaryDirectory(prefix="tre-api-bench-") as tmp:
        work = Path(tmp)
        for backend in args.backend:
            print(f"seeding {args.requests:,} requests on {backend}…", flush=True)
            if backend == "sqlite":
                rows.append(run_backend(backend, f"sqlite+pysqlite:///{work / 'tre.db'}", args, work))
            else:
                server = postgres.start_server()
                try:
                    rows.append(run_backend(backend, server.create_database(), args, work))
                finally:
                    server.stop()
    print(f"\n{args.clients} clients, {args.requests:,} requests in the store, on {os.cpu_count()} cores")
    print(f"{'backend':<10} {'calls':>7} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99 < 100 ms':>13}")
    for name, calls, rate, p50, p99 in rows:
        print(f"{name:<10} {calls:>7} {rate:>9.0f} {p50:>8.1f} {p99:>8.1f} {'yes' if p99 < 100 else 'NO':>13}")


if __name__ == "__main__":
    main()
