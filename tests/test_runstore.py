"""The run folder's one JSONL reader/writer and its lock: a kill never costs a later resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from undo.errors import UserError
from undo.runstore import JsonlAppender, RunStore, append_jsonl, read_jsonl


def test_a_torn_last_row_is_skipped_on_read_and_cut_before_the_next_append(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1"}\n{"id": "2"}\n{"id": "3", "cor')
    assert [r["id"] for r in read_jsonl(p)] == ["1", "2"]
    append_jsonl(p, {"id": "3"})
    assert p.read_text() == '{"id": "1"}\n{"id": "2"}\n{"id": "3"}\n'
    assert [r["id"] for r in read_jsonl(p)] == ["1", "2", "3"]  # and every later resume too


def test_a_whole_last_row_missing_its_newline_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1"}\n{"id": "2"}')
    assert [r["id"] for r in read_jsonl(p)] == ["1", "2"]
    with JsonlAppender(p) as w:
        w.write([{"id": "3"}, {"id": "4"}])
    assert [r["id"] for r in read_jsonl(p)] == ["1", "2", "3", "4"]


def test_a_file_that_is_one_torn_row_becomes_empty(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1", "te')
    append_jsonl(p, {"id": "1"})
    assert p.read_text() == '{"id": "1"}\n'


def test_a_bad_line_inside_the_file_names_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1"}\nnot json\n{"id": "2"}\n')
    with pytest.raises(UserError, match=r"a\.jsonl:2: not valid JSON"):
        list(read_jsonl(p))
    p.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        list(read_jsonl(p))


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.lock()
    code = ("import sys; from undo.runstore import RunStore; from undo.errors import UserError\n"
            f"try: RunStore({str(store.root)!r}).lock()\n"
            "except UserError as e: print(e); sys.exit(2)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert f"in use by another undo process (pid {os.getpid()})" in r.stdout
    store.unlock()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr  # released: the next run may go


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    root = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c",
                               f"from undo.runstore import RunStore; s = RunStore({str(root)!r}); s.lock(); "
                               "print('locked', flush=True); import time; time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        RunStore(root).lock()
    holder.kill()
    holder.wait()
    store = RunStore(root)
    store.lock()  # kill -9 released it
    assert json.loads((root / ".lock").read_text().strip()) > 0
    store.unlock()


def test_an_output_file_refuses_rows_made_with_other_settings(tmp_path: Path) -> None:
    from undo.runstore import claim_output

    out = tmp_path / "attempts.jsonl"
    made = {"command": "eval", "student": "s1", "split": "test"}
    claim_output(out, made)
    out.write_text('{"id": "1"}\n')
    claim_output(out, dict(made))  # the same again: resume
    with pytest.raises(UserError, match=r"differs in split, student"):
        claim_output(out, {**made, "student": "s2", "split": "val"})
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"id": "x"}\n')  # a user's file that undo did not write
    with pytest.raises(UserError, match="cannot tell what made it"):
        claim_output(mine, made)
