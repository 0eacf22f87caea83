"""HTTP service speed: GET summary of a stored report at 50 concurrent clients (throughput, p50 and p99 latency).

Run: python benchmarks/bench_service.py [--postgres postgresql://127.0.0.1/test] [--clients 50] [--seconds 20]
     [--workers N]

Starts `dsocr-registry serve` as its own process on a new registry holding the standard report, warms the summary,
then keeps CLIENTS requests in flight (aiohttp, one event loop, keep-alive connections; pip install
'.[bench]') for SECONDS and prints the figures. The client shares the machine's cores with the service, as a
dashboard on the same host would; httpx, the test suite's client, spends ~3 ms of CPU per request, more than the
service, so it would measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stored_registry(url: str, folder: pathlib.Path) -> str:
    """Store the standard report in the registry; its id."""
    from analyzer.analysis import analyze
    from analyzer.workload import load_profile
    from registry.store.db import Registry
    from registry.store.ingest import write_report

    report = analyze(load_profile("dsocr-standard-v1"))
    registry = Registry(url)
    try:
        registry.upgrade()
        write_report(registry, report, "bench_service")
    finally:
        registry.dispose()
    return report.report_id


async def load(base: str, path: str, clients: int, seconds: float) -> tuple[list[float], int, float]:
    import aiohttp

    latencies_ms: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector) as client:
        async def get() -> int:
            async with client.get(path) as response:
                await response.read()
                return response.status

        await asyncio.gather(*(get() for _ in range(clients)))  # open the connections
        stop_at = time.perf_counter() + seconds

        async def worker():
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status = await get()
                latencies_ms.append(1000 * (time.perf_counter() - started))
                errors += status != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies_ms, errors, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL (a new schema is made and dropped) instead of DuckDB")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="server processes (more than 1: PostgreSQL only)")
    args = parser.parse_args()

    import httpx
    import sqlalchemy as sa

    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-service-"))
    schema = None
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(sa.make_url(args.postgres).set(drivername="postgresql+psycopg"))
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        url = sa.make_url(args.postgres).set(drivername="postgresql+psycopg").update_query_dict(
            {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    else:
        url = str(folder / "registry.duckdb")
    report_id = stored_registry(url, folder)
    load_before = os.getloadavg()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = folder / "service.log"
    binary = pathlib.Path(sys.executable).parent / "dsocr-registry"
    with log.open("w") as out:
        service = subprocess.Popen([str(binary), "serve", "--db", url, "--port", str(port),
                                    "--workers", str(args.workers)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or service.poll() is not None:
                raise SystemExit(f"the service did not start: {log.read_text()}")
            time.sleep(0.2)
        path = f"/analytic/deepseek-ocr/{report_id}/summary?hardware=h100-sxm"
        first = time.perf_counter()
        assert httpx.get(base + path, timeout=60).status_code == 200
        first_ms = 1000 * (time.perf_counter() - first)
        latencies, errors, elapsed = asyncio.run(load(base, path, args.clients, args.seconds))
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    latencies.sort()
    backend = "PostgreSQL" if args.postgres else "DuckDB"
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"{backend}: GET summary, {args.clients} concurrent clients, {args.seconds:g} s, {args.workers} server "
          f"process(es), {os.cpu_count()} cores, load average before {load_before:.1f}")
    print(f"  first (priced) {first_ms:.0f} ms; then {len(latencies):,} requests, {errors} errors")
    print(f"  throughput {len(latencies) / elapsed:,.0f} requests/s; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
