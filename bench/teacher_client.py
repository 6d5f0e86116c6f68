"""How much time the teacher client adds on top of the server's own latency.

A loopback server (its own process, so it does not compete for our GIL) answers
every chat request after a fixed delay. With N requests at concurrency C and
latency L, a perfect client finishes in ceil(N/C) rounds of L (N*L/C is printed too:
2,000/64 is 31.25, but a perfect client still needs 32 rounds); the overhead is how much
longer the real one takes. Target (issue 23): at most 1 % at a realistic teacher latency,
2 s per answer, at concurrency 64 (N = 2,000) and 256 (N = 5,000). `--grid` runs those two,
the same two with `--jitter 0.5`, and, for the record, the 100 ms settings of issue 11
(N = 2,000 and 10,000).

With a fixed latency every answer of a round lands at the same instant, which no real
server does: answers differ in length. `--jitter F` gives request i a latency of
L x (1 + F x u_i), u_i uniform in [-1, 1] and fixed by i, and the ideal becomes the makespan
of a zero-cost client taking the requests in order as its workers free up (simulated).

    .venv/bin/python bench/teacher_client.py --grid
    .venv/bin/python bench/teacher_client.py --n 2000 --concurrency 64 --latency 2

Each section of the report is one function returning a dict of figures, so more
backends can be benchmarked side by side by adding a function to `SECTIONS`. The
first section is a floor: a client that does no work at all, showing what this
machine (its load, the server, the kernel) costs before our client adds anything.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import multiprocessing as mp
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from undo.config import OpenAIConfig, TeacherConfig
from undo.teacher.base import Request, SamplingParams, Usage
from undo.teacher.openai_backend import OpenAIBackend

_ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Step by step. The answer is 42."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
    }
).encode()
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_ANSWER)).encode()
    + b"\r\n\r\n"
    + _ANSWER
)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            return int(line[15:])
    return 0


_INDEX = re.compile(rb"Question (\d+):")


def latency_of(i: int, latency: float, jitter: float) -> float:
    """Request i's latency: fixed by i, so the simulated ideal and the server agree."""
    return latency * (1 + jitter * random.Random(i).uniform(-1, 1)) if jitter else latency


def ideal_time(n: int, concurrency: int, latency: float, jitter: float) -> float:
    """The makespan of a client that costs nothing: its free workers take requests in order."""
    if not jitter:
        return math.ceil(n / concurrency) * latency
    free = [0.0] * min(concurrency, n)
    for i in range(n):
        heapq.heappush(free, heapq.heappop(free) + latency_of(i, latency, jitter))
    return max(free)


async def _serve(latency: float, jitter: float, port_out: Any) -> None:
    """A minimal HTTP/1.1 keep-alive server: enough of the protocol for our clients."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                body = await reader.readexactly(length) if length else b""
                found = _INDEX.search(body) if jitter else None
                await asyncio.sleep(latency_of(int(found[1]), latency, jitter) if found else latency)
                writer.write(_RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port_out.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _server_main(latency: float, jitter: float, port_out: Any) -> None:
    asyncio.run(_serve(latency, jitter, port_out))


class LatencyServer:
    """The server above in a child process; yields its base URL and always stops it."""

    def __init__(self, latency: float, jitter: float = 0.0) -> None:
        self.latency = latency
        self.jitter = jitter

    def __enter__(self) -> str:
        recv, send = mp.Pipe(duplex=False)
        self.proc = mp.Process(target=_server_main, args=(self.latency, self.jitter, send), daemon=True)
        self.proc.start()
        if not recv.poll(30):
            self.proc.kill()
            raise RuntimeError("latency server did not start")
        self.port = recv.recv()
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(5)


def _requests(n: int) -> list[Request]:
    sp = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=256)
    return [
        Request([{"role": "user", "content": f"Question {i}: what is 6 x 7?"}], sp)
        for i in range(n)
    ]


def _figures(section: str, args: argparse.Namespace, measured: float, cpu: float) -> dict:
    ideal = ideal_time(args.n, args.concurrency, args.latency, args.jitter)
    return {
        "section": section,
        "n": args.n,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "jitter": args.jitter,
        "ideal_s": ideal,
        "n_l_over_c_s": args.n * args.latency / args.concurrency,
        "measured_s": measured,
        "ratio": measured / ideal,
        "overhead_pct": 100 * (measured - ideal) / ideal,
        "client_cpu_ms_per_request": 1000 * cpu / args.n,
        "requests_per_s": args.n / measured,
    }


def bench_floor(args: argparse.Namespace) -> dict[str, Any]:
    """A do-nothing client (one socket write and read per request, no HTTP library)."""
    def request(i: int) -> bytes:
        body = f"Question {i}:".encode()
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        return head + body

    async def run(port: int) -> None:
        pending = iter(range(args.n))

        async def worker() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in pending:
                writer.write(request(i))
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head))
            writer.close()

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))

    with LatencyServer(args.latency, args.jitter) as server:
        cpu0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(run(int(server.rsplit(":", 1)[1].split("/")[0])))
        measured = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return _figures("floor: raw socket client, no HTTP library (reference)", args, measured, cpu)


def bench_openai_http(args: argparse.Namespace) -> dict[str, Any]:
    with LatencyServer(args.latency, args.jitter) as url:
        cfg = TeacherConfig(backend="openai", model="bench-model", openai=OpenAIConfig(
            base_url=url, concurrency=args.concurrency, timeout=30.0, max_retries=2))
        backend = OpenAIBackend(cfg)
        reqs = _requests(args.n)
        usage = Usage()
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = backend.complete(reqs, usage)
        measured = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    assert len(results) == args.n and usage.retries == 0, usage
    return _figures(
        "openai backend over HTTP (loopback latency server, cache off)", args, measured, cpu
    )


def bench_inprocess(args: argparse.Namespace) -> dict[str, Any]:
    """Aggregate tokens/s of the in-process (transformers) teacher at batch 1 vs batch 16."""
    from undo.config import TeacherConfig
    from undo.teacher.base import SamplingParams
    from undo.teacher.local_backend import LocalBackend

    backend = LocalBackend(TeacherConfig(model=args.teacher))
    t0 = time.perf_counter()
    backend.health_check()  # loads the model
    load_s = time.perf_counter() - t0
    sp = SamplingParams(temperature=0.0, max_tokens=args.new_tokens)
    questions = [f"A shop sells {i + 3} boxes with {i + 7} pens each. How many pens? Think step by step."
                 for i in range(16)]
    out: dict[str, Any] = {"section": "in-process teacher (transformers)", "model": args.teacher,
                           "load_s": round(load_s, 1), "new_tokens": args.new_tokens}
    for batch, n in ((1, args.batch1_prompts), (16, 16)):
        backend.cfg.batch_size = batch
        reqs = [Request([{"role": "user", "content": q}], sp) for q in questions[:n]]
        usage = Usage()
        t0 = time.perf_counter()
        backend.complete(reqs, usage)
        dt = time.perf_counter() - t0
        out[f"batch{batch}_tokens_per_s"] = round(usage.completion_tokens / dt, 1)
    out["ratio_16_vs_1"] = round(out["batch16_tokens_per_s"] / out["batch1_tokens_per_s"], 2)
    return out


SECTIONS: list[Callable[[argparse.Namespace], dict[str, Any]]] = [bench_floor, bench_openai_http]


def _print(fig: dict[str, Any]) -> None:
    print(f"== {fig['section']}")
    if "ratio_16_vs_1" in fig:
        print(f"   model {fig['model']}, load {fig['load_s']} s, up to {fig['new_tokens']} new tokens")
        print(f"   batch 1   {fig['batch1_tokens_per_s']} tokens/s")
        print(f"   batch 16  {fig['batch16_tokens_per_s']} tokens/s  ({fig['ratio_16_vs_1']}x batch 1)")
        return
    print(f"   N={fig['n']} concurrency={fig['concurrency']} latency={fig['latency_s']:g} s "
          f"jitter={fig['jitter']:g}")
    print(f"   ideal time      {fig['ideal_s']:.3f} s  (ceil(N / concurrency) x latency, "
          f"simulated with jitter; N x latency / concurrency = {fig['n_l_over_c_s']:.3f} s)")
    print(f"   measured time   {fig['measured_s']:.3f} s  ({fig['requests_per_s']:.0f} req/s)")
    print(f"   ratio           {fig['ratio']:.3f}")
    target = "<= 1 %" if fig["latency_s"] >= 1 else "none: the record of issue 11's setting"
    print(f"   client overhead {fig['overhead_pct']:.2f} %  (target {target})")
    print(f"   client CPU      {fig['client_cpu_ms_per_request']:.3f} ms per request")


# (latency s, jitter, concurrency, N)
GRID = [(2.0, 0.0, 64, 2000), (2.0, 0.0, 256, 5000), (2.0, 0.5, 64, 2000), (2.0, 0.5, 256, 5000),
        (0.1, 0.0, 64, 2000), (0.1, 0.0, 256, 10000)]


def _grid(args: argparse.Namespace) -> None:
    rows = []
    for latency, jitter, concurrency, n in GRID:
        one = argparse.Namespace(**{**vars(args), "latency": latency, "jitter": jitter,
                                    "concurrency": concurrency, "n": n})
        for section in SECTIONS:
            fig = section(one)
            _print(fig)
            rows.append(fig)
    print("\n| latency | concurrency | N | ideal s | floor overhead | client overhead | client CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    for floor, client in zip(rows[::2], rows[1::2], strict=True):
        spread = f" ± {client['jitter']:.0%}" if client["jitter"] else ""
        print(f"| {client['latency_s']:g} s{spread} | {client['concurrency']} | {client['n']:,} "
              f"| {client['ideal_s']:.1f} | {floor['overhead_pct']:.2f} % | **{client['overhead_pct']:.2f} %** "
              f"| {client['client_cpu_ms_per_request']:.3f} |")
    out = Path(__file__).resolve().parent / "results" / "teacher_client.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds per request (> 0)")
    ap.add_argument("--jitter", type=float, default=0.0,
                    help="spread of the latency: request i takes latency x (1 + jitter x u_i), u_i in [-1, 1]")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON lines")
    ap.add_argument("--grid", action="store_true",
                    help="2 s, fixed and with jitter 0.5, at (64, 2,000) and (256, 5,000); 100 ms at "
                         "(64, 2,000) and (256, 10,000); prints a table and writes "
                         "bench/results/teacher_client.json")
    ap.add_argument("--inprocess", action="store_true",
                    help="also measure the in-process teacher at batch 1 vs 16 (loads the model)")
    ap.add_argument("--teacher", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch1-prompts", type=int, default=4)
    args = ap.parse_args(argv)
    if args.latency <= 0:
        ap.error("--latency must be > 0: the ideal time is N x latency / concurrency")
    if not 0 <= args.jitter < 1:
        ap.error("--jitter must be in [0, 1): a latency is never below zero")
    if args.grid:
        _grid(args)
        return
    for section in SECTIONS + ([bench_inprocess] if args.inprocess else []):
        fig = section(args)
        if args.json:
            print(json.dumps(fig))
        else:
            _print(fig)


if __name__ == "__main__":
    main()
