"""The completion cache: a finished teacher call is never paid for twice.

One SQLite file shared by every run and process on the machine. WAL mode lets
readers and one writer proceed together; each process opens its own connection
and writes single `INSERT OR IGNORE` statements in autocommit mode, so two jobs
racing on the same key keep the first answer and neither sees "database is locked"
(busy_timeout makes a writer wait for the other instead of failing).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from undo.teacher.base import (
    Completion,
    ProgressFn,
    Request,
    ResultFn,
    TeacherBackend,
    Usage,
)

CACHE_FILE = "completions.sqlite"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS completions_model ON completions (model);
"""


def default_cache_dir() -> Path:
    if os.environ.get("UNDO_CACHE_DIR"):
        return Path(os.environ["UNDO_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "undo"
    return Path.home() / ".cache" / "undo"


def cache_key(backend: str, model: str, request: Request) -> str:
    """sha256 of canonical JSON: equal requests share a key on any machine or Python."""
    payload = {
        "backend": backend,
        "model": model,
        "messages": request.messages,
        "sampling": request.sampling.key(),
        "sample_index": request.sample_index,
    }
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class CompletionCache:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        """`path`: the SQLite file, or a folder to hold `completions.sqlite`; default
        `default_cache_dir()`."""
        p = Path(path) if path is not None else default_cache_dir()
        if p.suffix != ".sqlite":
            p = p / CACHE_FILE
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        # on_result may fire on a backend's private thread: one lock, any thread.
        self._lock = threading.Lock()
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit, so every write is its own short
        # transaction that takes the write lock up front (no read-to-write upgrade,
        # which in WAL mode fails with SQLITE_BUSY without waiting).
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Switching a fresh file to WAL needs a moment of exclusive access, which a
        # second process opening the same new file at that instant can be refused.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # A process crash loses nothing committed; only a power cut could.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def __repr__(self) -> str:
        return f"CompletionCache({str(self.path)!r})"

    def get(self, backend: str, model: str, request: Request) -> Completion | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason "
                "FROM completions WHERE key = ?",
                (cache_key(backend, model, request),),
            ).fetchone()
        if row is None:
            return None
        return Completion(
            text=row[0],
            prompt_tokens=row[1],
            completion_tokens=row[2],
            finish_reason=row[3],
            cached=True,
        )

    def put(self, backend: str, model: str, request: Request, completion: Completion) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cache_key(backend, model, request),
                    backend,
                    model,
                    completion.text,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    completion.finish_reason,
                    time.time(),
                ),
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            per_model = dict(
                self._conn.execute(
                    "SELECT model, COUNT(*) FROM completions GROUP BY model ORDER BY model"
                ).fetchall()
            )
        size = sum(
            f.stat().st_size
            for f in (self.path, self.path.with_name(self.path.name + "-wal"))
            if f.exists()
        )
        return {
            "path": str(self.path),
            "entries": sum(per_model.values()),
            "size_bytes": size,
            "models": per_model,
        }

    def clear(self, model: str | None = None) -> int:
        """Delete every entry, or those of one model; returns how many were removed."""
        with self._lock:
            if model is None:
                cur = self._conn.execute("DELETE FROM completions")
            else:
                cur = self._conn.execute("DELETE FROM completions WHERE model = ?", (model,))
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CompletionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _accepts_on_result(backend: TeacherBackend) -> bool:
    try:
        return "on_result" in inspect.signature(backend.complete).parameters
    except (TypeError, ValueError):
        return False


class CachedTeacher:
    """A TeacherBackend that answers from the cache and sends only the misses on."""

    def __init__(self, backend: TeacherBackend, cache: CompletionCache) -> None:
        self.backend = backend
        self.cache = cache
        self.name = backend.name
        self.model = backend.model

    def __repr__(self) -> str:
        return f"CachedTeacher({self.backend!r}, {self.cache!r})"

    def health_check(self) -> None:
        self.backend.health_check()

    def complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None = None,
        *,
        on_result: ResultFn | None = None,
    ) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        # Identical requests in one job are sent once: the cache could keep only
        # one answer anyway, and a re-run must see the same results as this run.
        misses: dict[str, list[int]] = {}
        hits = 0
        for i, req in enumerate(requests):
            c = self.cache.get(self.name, self.model, req)
            if c is not None:
                results[i] = c
                usage.add(c)
                hits += 1
                if on_result is not None:
                    on_result(i, c)
            else:
                misses.setdefault(cache_key(self.name, self.model, req), []).append(i)
        if hits and progress is not None:
            progress(hits)
        if not misses:
            return results  # type: ignore[return-value]

        groups = list(misses.values())
        to_send = [requests[g[0]] for g in groups]

        def arrived(j: int, c: Completion) -> None:
            # Persist first: if the job dies a moment later, this answer survives.
            self.cache.put(self.name, self.model, to_send[j], c)
            for k, i in enumerate(groups[j]):
                results[i] = c if k == 0 else _as_cached(c)
                if k:
                    usage.add(results[i])  # type: ignore[arg-type]
                if on_result is not None:
                    on_result(i, results[i])  # type: ignore[arg-type]
            if progress is not None:
                progress(len(groups[j]))

        if _accepts_on_result(self.backend):
            self.backend.complete(to_send, usage, None, on_result=arrived)
        else:  # a backend without the callback: store the batch when it returns
            for j, c in enumerate(self.backend.complete(to_send, usage, None)):
                arrived(j, c)
        return results  # type: ignore[return-value]


def _as_cached(c: Completion) -> Completion:
    return Completion(
        text=c.text,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        finish_reason=c.finish_reason,
        cached=True,
    )
