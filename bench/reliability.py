"""Reliability, measured: kills, bad inputs, and runs that share a name or a cache.

    .venv/bin/python bench/reliability.py                  # all three parts, 10 kill trials
    .venv/bin/python bench/reliability.py --only kill --trials 12

1. kill -9 at random moments of a tiny real run (the offline teacher and student, the demo's
   task; the tests' TINY sizes), stratified over the run's wall time so every stage gets hit;
   each killed run is started again with the same command and must end with the metrics of
   the uninterrupted run, with no finished teacher completion made twice.
2. The bad-input corpus of tests/test_cli.py: each case exits 2 with one line, no traceback,
   and the folders it was pointed at are unchanged.
3. Two `undo run` on one name: the second is refused at once, naming the first one's pid.
   Two `undo teach` on different outputs sharing one completion cache, 8 concurrent teacher
   workers each, against a loopback server: both finish, no lock error, every completion
   stored once.

Prints one JSON line per part and a summary; writes bench/results/reliability.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "loop"))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' corpus, fixtures and loopback server

from fakes.fault_server import FaultServer  # noqa: E402
from test_cli import _bad_inputs, _tree  # noqa: E402
from test_loop import TINY  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}


def undo(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "undo.cli", *args], env=env or ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def cache_rows(cache: Path) -> int:
    with sqlite3.connect(cache / "completions.sqlite") as db:
        return int(db.execute("select count(*) from completions").fetchone()[0])


def billed_requests(run: Path) -> int:
    """Teacher requests answered by the model (not the cache) as recorded so far: a finished
    stage's usage (summed over its invocations), or an unfinished one's partial record."""
    n = sum(json.loads(p.read_text())["usage"]["requests"] for p in run.glob("iter_*/teacher_usage.json"))
    return n + sum(json.loads(p.read_text())["requests"] for p in run.glob("iter_*/teacher_usage.partial.json"))


def outcome(run: Path) -> dict[str, Any]:
    """The metrics per iteration, and a digest of every text that decides them: the teacher's
    rationales, the training losses and the student's answers on every split."""
    rows = json.loads((run / "summary.json").read_text())["iterations"]
    texts = hashlib.sha256()
    for path in sorted(run.glob("*/rationales.jsonl")) + sorted(run.glob("*/attempts_*.jsonl")):
        for row in sorted((json.loads(line) for line in path.open()), key=lambda r: str(r["id"])):
            texts.update(json.dumps([path.parent.name, path.name, row["id"], row.get("rationale"),
                                     row.get("output"), row.get("correct")]).encode())
    losses = {p.parent.parent.name: [round(x, 4) for x in json.loads(p.read_text())["losses"]]
              for p in sorted(run.glob("iter_*/student/train_result.json"))}
    return {"metrics": [(r["iteration"], r.get("val_acc"), r.get("test_acc")) for r in rows],
            "texts": texts.hexdigest()[:16], "losses": losses}


def last_stage(run: Path) -> str:
    marks = sorted(run.glob("*/.done/*"), key=lambda p: p.stat().st_mtime)
    return f"{marks[-1].parent.parent.name}/{marks[-1].name}" if marks else "(none)"


def tiny_config(work: Path, name: str) -> Path:
    from undo.config import config_to_yaml, load_config

    cfg = load_config(ROOT / "configs" / "demo.yaml", [*TINY, f"output.dir={work / 'runs'}", f"name={name}"])
    path = work / f"{name}.yaml"
    path.write_text(config_to_yaml(cfg))
    return path


def run_to_end(cfg: Path, cache: Path) -> float:
    t0 = time.perf_counter()
    p = undo("run", str(cfg), env={**ENV, "UNDO_CACHE_DIR": str(cache)})
    _, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"run {cfg.name} failed ({p.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - t0


def kill_trials(work: Path, trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    ref_cfg = tiny_config(work, "reference")
    ref_cache = work / "cache-reference"
    wall = run_to_end(ref_cfg, ref_cache)
    ref = work / "runs" / "reference"
    expected, ref_rows = outcome(ref), cache_rows(ref_cache)
    assert billed_requests(ref) == ref_rows, "the reference run asked the model once per completion"
    print(f"reference run: {wall:.0f} s, {ref_rows} teacher completions, {expected}", flush=True)
    results = []
    for i in range(trials):
        at = wall * (i + rng.random()) / trials  # stratified: trial i falls in the i-th slice
        name, cache = f"trial{i}", work / f"cache-{i}"
        cfg = tiny_config(work, name)
        run = work / "runs" / name
        p = undo("run", str(cfg), env={**ENV, "UNDO_CACHE_DIR": str(cache)})
        time.sleep(at)
        finished_first = p.poll() is not None
        p.send_signal(signal.SIGKILL)
        p.wait()
        stage = last_stage(run)
        rows_at_kill = cache_rows(cache) if (cache / "completions.sqlite").exists() else 0
        billed_before = billed_requests(run)
        t0 = time.perf_counter()
        run_to_end(cfg, cache)
        got = outcome(run)
        trial = {
            "trial": i, "kill_at_s": round(at, 1), "after_stage": stage, "finished_before_kill": finished_first,
            "completions_at_kill": rows_at_kill, "resume_s": round(time.perf_counter() - t0, 1),
            "metrics_identical": got == expected, "completions": cache_rows(cache),
            # what the resumed invocation had the model answer, beyond what was not yet cached at
            # the kill: a completion finished before the kill and asked of the model again
            "repeated_completions": (billed_requests(run) - billed_before) - (ref_rows - rows_at_kill),
        }
        if not trial["metrics_identical"]:
            trial["metrics"] = got
        results.append(trial)
        print(json.dumps(trial), flush=True)
    return {
        "reference_wall_s": round(wall, 1), "reference_completions": ref_rows, "reference_metrics": expected,
        "trials": len(results), "identical": sum(t["metrics_identical"] for t in results),
        "repeated_completions": sum(t["repeated_completions"] for t in results),
        "extra_cache_rows": sum(t["completions"] - ref_rows for t in results),
        "stages_hit": sorted({t["after_stage"] for t in results}), "detail": results,
    }


def bad_inputs(work: Path) -> dict[str, Any]:
    root = work / "bad"
    root.mkdir()
    cases = _bad_inputs(root)
    before = _tree(root)
    failures, seconds = [], []
    for name, args in cases.items():
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "undo.cli", *args], env=ENV, capture_output=True, text=True,
                           cwd=ROOT)
        seconds.append(time.perf_counter() - t0)
        lines = r.stderr.strip().splitlines()
        ok = (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
              and "Traceback" not in r.stderr)
        if not ok:
            failures.append({"case": name, "rc": r.returncode, "stderr": r.stderr[-300:]})
    return {"cases": len(cases), "one_line_exit_2": len(cases) - len(failures), "failures": failures,
            "folders_unchanged": _tree(root) == before, "slowest_s": round(max(seconds), 1),
            "median_s": round(sorted(seconds)[len(seconds) // 2], 1)}


def concurrency(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # a) one name, two runs: the second must stop at once with the holder's pid
    cfg = tiny_config(work, "locked")
    env = {**ENV, "UNDO_CACHE_DIR": str(work / "cache-lock")}
    first = undo("run", str(cfg), env=env)
    run = work / "runs" / "locked"
    deadline = time.time() + 300
    while not (run / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    t0 = time.perf_counter()
    second = subprocess.run([sys.executable, "-m", "undo.cli", "run", str(cfg)], env=env,
                            capture_output=True, text=True)
    out["second_run_refused"] = second.returncode == 2 and str(first.pid) in second.stderr
    out["second_run_s"] = round(time.perf_counter() - t0, 1)
    out["second_run_says"] = second.stderr.strip()[-200:]
    first.send_signal(signal.SIGKILL)
    first.wait()

    # b) two names, one cache, 8 workers each, overlapping requests, against a loopback server
    data = work / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i % 7}?", "answer": i + i % 7}) + "\n"
                            for i in range(400)))
    cache = work / "cache-shared"
    env = {**ENV, "UNDO_CACHE_DIR": str(cache)}
    with FaultServer(latency=0.01, max_lifetime=600) as srv:
        common = ["file", f"task.source={data}", "task.answer_type=number", "splits.val=1", "splits.train=null",
                  "splits.test=null", "teacher.backend=openai", "teacher.model=test-model",
                  f"teacher.openai.base_url={srv.url}", "teacher.openai.concurrency=8",
                  "teacher.max_attempts=1", "teacher.rationalize=false"]
        t0 = time.perf_counter()
        procs = [undo("teach", *common, "--out", str(work / f"teach{j}.jsonl"), env=env) for j in range(2)]
        errs = [p.communicate()[1].decode() for p in procs]
        out["shared_cache_s"] = round(time.perf_counter() - t0, 1)
        out["shared_cache_both_finished"] = all(p.returncode == 0 for p in procs)
        out["lock_errors"] = sum(("locked" in e.lower()) or ("busy" in e.lower()) for e in errs)
        out["rows_written"] = [sum(1 for _ in (work / f"teach{j}.jsonl").open()) for j in range(2)
                               if (work / f"teach{j}.jsonl").exists()]
        out["server_completions"] = len(srv.successes)
        out["cache_rows"] = cache_rows(cache)
        if not out["shared_cache_both_finished"]:
            out["stderr"] = [e[-300:] for e in errs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["kill", "bad", "concurrency"], nargs="+",
                    default=["kill", "bad", "concurrency"])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (runs, caches)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="undo-reliability-"))
    out = ROOT / "bench" / "results" / "reliability.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}  # parts not run stay
    t0 = time.perf_counter()
    try:
        if "bad" in args.only:
            results["bad_inputs"] = bad_inputs(work)
            print(json.dumps({"bad_inputs": results["bad_inputs"]}), flush=True)
        if "concurrency" in args.only:
            results["concurrency"] = concurrency(work)
            print(json.dumps({"concurrency": results["concurrency"]}), flush=True)
        if "kill" in args.only:
            results["kill"] = kill_trials(work, args.trials, args.seed)
            summary = {k: v for k, v in results["kill"].items() if k != "detail"}
            print(json.dumps({"kill": summary}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    walls = results["wall_s"] if isinstance(results.get("wall_s"), dict) else {}
    walls[" ".join(args.only)] = round(time.perf_counter() - t0, 1)  # seconds per invocation
    results["wall_s"] = walls
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wall {results['wall_s']} s; {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
