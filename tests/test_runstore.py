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


def test_the_run_folders_layout_is_named_in_one_place(tmp_path: Path) -> None:
    """The layout DESIGN.md documents, as RunStore names it: readers ask for a file by what it
    holds, never by its path."""
    from undo.runstore import train_result_file

    s = RunStore(tmp_path)
    rel = {name: str(p.relative_to(tmp_path)) for name, p in {
        "rationales": s.rationales_file(1), "usage": s.teacher_usage_file(1),
        "partial": s.teacher_usage_partial_file(1), "examples": s.stage_rows_file(0, "examples"),
        "examples_usage": s.stage_usage_file(0, "examples_stepwise"), "data": s.train_data_file(2),
        "student": s.student_dir(2), "metrics": s.metrics_file("base"), "val": s.attempts_file(0, "val"),
        "split": s.split_file("test"), "report": s.report_md, "html": s.report_html,
        "plot": s.plot_file("accuracy"), "events": s.tensorboard_dir, "matrix": s.transfer_matrix_file,
        "trained": train_result_file(s.student_dir(0))}.items()}
    assert rel == {
        "rationales": "iter_1/rationales.jsonl", "usage": "iter_1/teacher_usage.json",
        "partial": "iter_1/teacher_usage.partial.json", "examples": "iter_0/examples.jsonl",
        "examples_usage": "iter_0/examples_stepwise_usage.json", "data": "iter_2/train_data.jsonl",
        "student": "iter_2/student", "metrics": "base/metrics.json", "val": "iter_0/attempts_val.jsonl",
        "split": "splits/test.jsonl", "report": "report.md", "html": "report.html",
        "plot": "plots/accuracy.png", "events": "tensorboard", "matrix": "transfer_matrix.json",
        "trained": "iter_0/student/train_result.json"}
    t = s.transfer("smol_iter0_abcd1234")
    assert t.root == tmp_path / "transfer_smol_iter0_abcd1234" and not t.finished()
    t.metrics_file.parent.mkdir()
    t.metrics_file.write_text("{}")
    t.attempts_file("test").write_text("")
    assert t.finished() and t.student_dir.name == "student" and t.made_by_file.name == "transfer.json"
