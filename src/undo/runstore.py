"""The run folder is the only state: atomic writes, append-per-item JSONL, stage markers.

A stage is finished only when its marker is renamed into place, so a run killed
at any moment (even `kill -9`) resumes from what is on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from undo.errors import UserError
from undo.rows import IterationMetrics, RationaleRow, StudentAttempt, Summary, TrainRow


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


def swap_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder into place. An existing target is moved aside first, so no
    moment exists at which `target` holds a mix of old and new files."""
    import shutil

    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _cut_torn_tail(path: Path) -> None:
    """Make the file end at a row boundary before anything is appended to it.

    A writer killed mid-row leaves a last line without its newline. Appending after it
    would glue the next row onto it and make the file unreadable from then on; so a
    torn tail is cut off (that row is redone), and a tail that is a whole row missing
    only its newline gets the newline."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return  # the usual case: one byte read
        f.seek(0)
        data = f.read()  # only after a kill
        cut = data.rfind(b"\n") + 1  # start of the last line (0: the file is one line)
        try:
            json.loads(data[cut:])
        except ValueError:
            f.truncate(cut)
        else:
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


class JsonlAppender:
    """Appends rows to a JSONL file, each batch flushed and fsynced: rows are on disk
    before any stage marker written after them vouches for them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    """One row, on disk when this returns: a kill loses at most the row being written."""
    with JsonlAppender(path) as w:
        w.write([row])


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a run's JSONL file. A last line without its newline (a killed writer) is
    a row only when it is whole JSON; a bad line anywhere else is an error naming it."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="strict") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    if not line.endswith("\n"):
                        return  # the writer died mid-line; that row is redone
                    raise UserError(f"{path}:{n}: not valid JSON; delete that line (its row "
                                    "is redone) or the file") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None


# The run folder's files read as their rows.py types (the same rows, read as read_jsonl and
# read_json read them: nothing is checked or converted)


def read_rationale_rows(path: Path) -> Iterator[RationaleRow]:
    """iter_K/rationales.jsonl (and iter_0/examples*.jsonl): the teacher's rows."""
    return cast("Iterator[RationaleRow]", read_jsonl(path))


def read_attempt_rows(path: Path) -> Iterator[StudentAttempt]:
    """iter_K/attempts_<split>.jsonl (and a transfer folder's): the student's graded answers."""
    return cast("Iterator[StudentAttempt]", read_jsonl(path))


def read_train_rows(path: Path) -> Iterator[TrainRow]:
    """iter_K/train_data.jsonl: the training set of an iteration."""
    return cast("Iterator[TrainRow]", read_jsonl(path))


def read_metrics(path: Path) -> IterationMetrics:
    """iter_K/metrics.json (or base/metrics.json)."""
    return cast("IterationMetrics", read_json(path))


def read_summary(path: Path) -> Summary:
    """summary.json of a finished run."""
    return cast("Summary", read_json(path))


def claim_output(path: Path, made_by: dict[str, Any]) -> None:
    """Resuming into an output file is only safe when the same thing made it: an --out
    file remembers what made it (a `.made-by.json` beside it) and refuses rows of another."""
    path = Path(path)
    stamp = path.with_name(path.name + ".made-by.json")
    made_by = json.loads(json.dumps(made_by))  # as it reads back from disk
    if stamp.exists():
        before = read_json(stamp)
        if before != made_by:
            keys = sorted(k for k in set(before) | set(made_by) if before.get(k) != made_by.get(k))
            raise UserError(f"{path} holds rows made with other settings (differs in {', '.join(keys)}); "
                            "use another --out, or delete it and its .made-by.json")
        return
    if path.exists() and path.stat().st_size > 0:
        raise UserError(f"{path} exists and undo cannot tell what made it; use another --out or delete it")
    write_json(stamp, made_by)


def train_result_file(student_dir: Path | str) -> Path:
    """A trained student folder's train_result.json (steps, losses, tokens/s): written last,
    so its presence says the folder holds a finished student."""
    return Path(student_dir) / "train_result.json"


class TransferFolder:
    """Paths of one transfer folder, runs/<name>/transfer_<student>_iter<K>_<digest>/: another
    student trained on iteration K's training set and scored on the run's val and test."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def made_by_file(self) -> Path:
        """transfer.json: the student, iteration and overrides that made the folder."""
        return self.root / "transfer.json"

    @property
    def student_dir(self) -> Path:
        return self.root / "student"

    def attempts_file(self, split: str) -> Path:
        return self.root / f"attempts_{split}.jsonl"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    def finished(self) -> bool:
        """Scored: metrics written and test answers there (what `undo compare` pairs)."""
        return self.metrics_file.exists() and self.attempts_file("test").exists()


class RunStore:
    """Paths, markers and the lock of runs/<name>/."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock: Any = None

    def lock(self) -> None:
        """Hold the run folder for this process's lifetime: a second `undo run` on the same
        folder stops at once instead of interleaving its writes with ours. The kernel drops
        an flock when its holder dies, so a killed run never leaves a stale lock."""
        import fcntl

        if self._lock is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        f = (self.root / ".lock").open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise UserError(f"{self.root} is in use by another undo process (pid {holder}); "
                            "wait for it or use another name=") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def iter_dir(self, k: int | str) -> Path:
        return self.root / (f"iter_{k}" if isinstance(k, int) else k)

    def path(self, k: int | str, name: str) -> Path:
        return self.iter_dir(k) / name

    # a teacher stage -> (its rows, its usage), in its iteration's folder: `teach` explains or
    # refines; the `examples*` passes write iteration 0's worked examples for tasks without any
    STAGE_FILES = {"teach": ("rationales.jsonl", "teacher_usage.json"),
                   "examples": ("examples.jsonl", "examples_usage.json"),
                   "examples_stepwise": ("examples_stepwise.jsonl", "examples_stepwise_usage.json")}

    def stage_rows_file(self, k: int | str, stage: str = "teach") -> Path:
        return self.path(k, self.STAGE_FILES[stage][0])

    def stage_usage_file(self, k: int | str, stage: str = "teach", partial: bool = False) -> Path:
        """The stage's usage (teacher_usage.json); `partial`: what interrupted invocations spent."""
        name = self.STAGE_FILES[stage][1]
        return self.path(k, name.replace(".json", ".partial.json") if partial else name)

    def rationales_file(self, k: int | str) -> Path:
        return self.stage_rows_file(k)

    def teacher_usage_file(self, k: int | str) -> Path:
        return self.stage_usage_file(k)

    def teacher_usage_partial_file(self, k: int | str) -> Path:
        return self.stage_usage_file(k, partial=True)

    def train_data_file(self, k: int | str) -> Path:
        """The training set iteration k's student was trained on (source of each row)."""
        return self.path(k, "train_data.jsonl")

    def student_dir(self, k: int | str) -> Path:
        return self.path(k, "student")

    def metrics_file(self, k: int | str) -> Path:
        return self.path(k, "metrics.json")

    def attempts_file(self, k: int | str, split: str) -> Path:
        """Iteration k's student answers on a split (`"base"`: the untrained student); iteration
        k's train answers are the diagnosis of student k-1."""
        return self.path(k, f"attempts_{split}.jsonl")

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def flow_file(self) -> Path:
        return self.root / "flow.json"

    @property
    def saved_config(self) -> Path:
        """config.yaml, whether or not it exists yet (`config_file` requires it)."""
        return self.root / "config.yaml"

    def split_file(self, split: str) -> Path:
        return self.root / "splits" / f"{split}.jsonl"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def plot_file(self, name: str) -> Path:
        """plots/<name>.png, the report's figures."""
        return self.root / "plots" / f"{name}.png"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    @property
    def transfer_matrix_file(self) -> Path:
        """transfer_matrix.json: `undo transfer`'s students x iterations table for this run."""
        return self.root / "transfer_matrix.json"

    def transfer(self, name: str) -> TransferFolder:
        """The transfer folder `transfer_<name>` (name: student slug, iteration and digest)."""
        return TransferFolder(self.root / f"transfer_{name}")

    def config_file(self) -> Path:
        """The run's saved config.yaml; a folder without one is not a run (one line)."""
        path = self.saved_config
        if not path.exists():
            raise UserError(f"{self.root}: not an undo run folder (no config.yaml)")
        return path

    def best_iteration(self, hint: str = "pass --iteration K") -> int:
        """The finished run's best iteration by val (summary.json); `hint` says what to do without one."""
        path = self.summary_file
        if not path.exists():
            raise UserError(f"{self.root}: unfinished run; {hint}")
        return int(read_summary(path)["best_iteration"])

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
