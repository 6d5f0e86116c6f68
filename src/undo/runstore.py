"""The run folder is the only state: atomic writes, append-per-item JSONL, stage markers.

A stage is finished only when its marker is renamed into place, so a run killed
at any moment (even `kill -9`) resumes from what is on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide run files from other users
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """One row per call, flushed: a crash loses at most the row being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a truncated last line (a killed writer) is ignored."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # the writer died mid-line; that row is redone
            if line.strip():
                yield json.loads(line)


class RunStore:
    """Paths and markers of runs/<name>/."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def iter_dir(self, k: int | str) -> Path:
        return self.root / (f"iter_{k}" if isinstance(k, int) else k)

    def path(self, k: int | str, name: str) -> Path:
        return self.iter_dir(k) / name

    def _marker(self, k: int | str, stage: str) -> Path:
        return self.iter_dir(k) / ".done" / stage

    def done(self, k: int | str, stage: str) -> bool:
        return self._marker(k, stage).exists()

    def mark_done(self, k: int | str, stage: str, info: dict[str, Any] | None = None) -> None:
        write_json(self._marker(k, stage), info or {})

    def iterations(self) -> list[int]:
        ks = []
        for p in self.root.glob("iter_*"):
            suffix = p.name[len("iter_"):]
            if suffix.isdigit():
                ks.append(int(suffix))
        return sorted(ks)
