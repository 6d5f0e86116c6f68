"""The HTTP libraries at hand, bare, on the teacher client's workload (issue 23).

Each of C workers posts a small chat body and reads the JSON answer, N requests in all,
against `teacher_client.py`'s loopback stub (fixed latency, its own process). Compared:
httpx and httpx2 (the pydantic fork that huggingface_hub now pulls in), one client per
worker (what `http_job.py` does) or one client shared by all, and optionally uvloop.
Prints the time over the ideal ceil(N / C) x latency and the client CPU per request.

    .venv/bin/python bench/http_libraries.py --n 5000 --concurrency 256 --latency 2 \
        [--libs httpx httpx2] [--modes per_worker shared] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import time
from typing import Any

from teacher_client import LatencyServer

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "What is 6 x 7?"}]}).encode()


async def _job(lib: Any, url: str, n: int, concurrency: int, shared: bool) -> None:
    pending = iter(range(n))
    ssl_context = lib.create_ssl_context()  # once, as the backend does: loading CA files is slow

    def client(size: int) -> Any:
        return lib.AsyncClient(verify=ssl_context, timeout=30,
                               limits=lib.Limits(max_connections=size, max_keepalive_connections=size))

    one = client(concurrency) if shared else None

    async def worker() -> None:
        own = one or client(1)
        for _ in pending:
            (await own.post(url + "/chat/completions", content=BODY)).json()
        if one is None:
            await own.aclose()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if one is not None:
        await one.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency", type=float, default=2.0)
    ap.add_argument("--libs", nargs="+", default=["httpx", "httpx2"])
    ap.add_argument("--modes", nargs="+", default=["per_worker", "shared"], choices=["per_worker", "shared"])
    ap.add_argument("--uvloop", action="store_true", help="run the event loop on uvloop (if installed)")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    ideal = math.ceil(args.n / args.concurrency) * args.latency
    print(f"N={args.n} concurrency={args.concurrency} latency={args.latency:g} s ideal={ideal:g} s"
          f"{' uvloop' if args.uvloop else ''}")
    for name in args.libs:
        lib = importlib.import_module(name)
        for mode in args.modes:
            with LatencyServer(args.latency) as url:
                cpu0, t0 = time.process_time(), time.perf_counter()
                asyncio.run(_job(lib, url, args.n, args.concurrency, mode == "shared"))
                took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            version = getattr(lib, "__version__", "?")
            print(f"| {name} {version} | {mode} | {100 * (took - ideal) / ideal:.2f} % "
                  f"| {1000 * cpu / args.n:.3f} ms |", flush=True)


if __name__ == "__main__":
    main()
