"""The UNDO iteration and the one-shot baseline, stage by stage (see DESIGN.md).

iteration 0:   teach (explain + verify) -> mix -> train -> eval
iteration t>0: diagnose -> refine (feedback + verify) -> mix -> train -> eval
Every stage reads its inputs from the run folder and writes its outputs there
with a completion marker, so re-running the same command resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from undo import display
from undo.config import RunConfig, config_to_yaml, resume_diff
from undo.errors import UserError
from undo.loop.feedback import refine_items, solved, student_profile, tailoring
from undo.loop.mixing import mix_training_set
from undo.loop.plan import matched_steps, preflight
from undo.registries import check_registered
from undo.rows import IterationMetrics, RationaleRow, StageUsage, StudentAttempt, Summary, TrainRow, UsageCounts
from undo.runstore import (
    RunStore,
    append_jsonl,
    read_attempt_rows,
    read_json,
    read_jsonl,
    read_metrics,
    read_rationale_rows,
    read_train_rows,
    train_result_file,
    write_atomic,
    write_json,
    write_jsonl,
)
from undo.tasks import Record, make_splits
from undo.teacher.base import Usage
from undo.teacher.budget import TeacherBudget, budget_summary, measured_bytes_per_token, spent_before
from undo.teacher.rationale import (
    FAILED,
    VERIFIED,
    TeachItem,
    example_candidates,
    example_pass_config,
    few_shot_examples,
    generate_rationales,
    messages_for,
    summarize,
    teacher_examples,
)

SPLITS = ("train", "val", "test")
# the worked-example passes of iteration 0 (when the task has no gold rationales)
EXAMPLE_STAGES = ("examples", "examples_stepwise")


class BudgetSpent(Exception):
    """The teacher budget cannot pay for one more question: the loop stops here."""


class UndoRun:
    """One run folder. Construct, then call run() (or a single stage method)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = check_registered(cfg)  # a config built in Python meets the CLI's checks
        self.store = RunStore(cfg.run_dir)
        self._teacher: Any = None
        self._refiner: Any = None
        self.trackers: Any = None  # undo.outputs.tracking.Trackers while run() runs
        self.splits: dict[str, list[Record]] = {}
        self._examples: list[dict[str, str]] | None = None

    # ---- set-up ------------------------------------------------------------------

    def prepare(self) -> None:
        """Save the resolved config (or check it matches a run being resumed) and the splits."""
        import yaml

        cfg_path = self.store.saved_config
        if cfg_path.exists():  # read-only, before the lock: a refused resume leaves no trace
            raw = yaml.safe_load(cfg_path.read_text())
            try:  # a key added to undo since the run started takes its default, as it did then
                diff = resume_diff(RunConfig.model_validate(raw), self.cfg)
            except ValidationError as e:  # a key removed or renamed since
                diff = [".".join(str(x) for x in e.errors()[0]["loc"])]
            if diff:
                raise UserError(
                    f"{cfg_path}: this run folder was made with a different config "
                    f"(differs in {', '.join(diff[:5])}); use a new name= or the same settings"
                )
        saved = all(self.store.split_file(s).exists() for s in SPLITS)
        if not saved:  # before anything is written: a task that cannot load leaves no run folder
            self.splits = make_splits(self.cfg.task, self.cfg.splits, self.cfg.seed)
        self.store.lock()  # before anything is written: one process per run folder
        write_atomic(cfg_path, config_to_yaml(self.cfg))
        if saved:
            self.splits = {s: [Record.from_dict(r) for r in read_jsonl(self.store.split_file(s))]
                           for s in SPLITS}
            return
        for s in SPLITS:
            write_jsonl(self.store.split_file(s), [r.to_dict() for r in self.splits[s]])

    @property
    def teacher(self) -> Any:
        if self._teacher is None:
            from undo.teacher import build_teacher

            self._teacher = build_teacher(self.cfg.teacher)
            self._teacher.health_check()
        return self._teacher

    @property
    def refiner(self) -> Any:
        """The teacher of the refine step: teacher.refine_model when set, else the teacher."""
        if self.cfg.teacher.refine_model in (None, self.cfg.teacher.model):
            return self.teacher
        if self._refiner is None:
            from undo.teacher import build_teacher

            self._refiner = build_teacher(self.cfg.teacher.model_copy(
                update={"model": self.cfg.teacher.refine_model}))
            self._refiner.health_check()
        return self._refiner

    def refine_shots(self) -> list[dict[str, Any]]:
        """What a refine request shows before it: teacher.refine_examples refine worked
        examples (teacher/refine_examples.py), else the explain worked examples."""
        n = self.cfg.teacher.refine_examples
        if not n:
            return self.worked_examples()
        from undo.teacher.refine_examples import refine_examples

        return refine_examples(self.worked_examples(), self.splits["train"], n)

    # ---- stages ------------------------------------------------------------------

    def teach(self, k: int, items: list[TeachItem], label: str,
              examples: list[dict[str, str]] | None = None, stage: str = "teach") -> list[RationaleRow]:
        """A teacher stage of iteration k: `teach` (explain or refine: rationales.jsonl), or one
        of the zero-shot passes that write worked examples (EXAMPLE_STAGES)."""
        path = self.store.stage_rows_file(k, stage)
        if self.store.done(k, stage):
            return list(read_rationale_rows(path))
        # what earlier, interrupted invocations of this stage spent: a resumed run's usage
        # is the sum over all of them (what they finished comes back as cache hits)
        partial = self.store.stage_usage_file(k, stage, partial=True)
        earlier = read_json(partial) if partial.exists() else {}
        invocations = int(earlier.get("invocations", 0)) + 1
        usage = Usage()
        last_save = 0.0

        def save(force: bool = False) -> None:
            nonlocal last_save
            if force or time.time() - last_save > 2.0:  # kill -9 loses at most 2 s of accounting
                write_json(partial, usage.merged(earlier).to_dict() | {"invocations": invocations})
                last_save = time.time()

        def progress(n: int, _total: int) -> None:
            advance(n)
            save()

        budget = self.teacher_budget(k)
        if budget is not None and items and not path.exists() and not budget.fits(
                Usage(), *budget.bound(messages_for(items[0], self.cfg.teacher, examples))):
            if k == 0:
                raise UserError("loop.budget is too small for even one teacher question "
                                f"(left: {budget.tokens_left} tokens, {budget.cost_left} USD)")
            raise BudgetSpent(f"teacher budget spent before iteration {k}")
        teacher_cfg = self.cfg.teacher if stage == "teach" else example_pass_config(self.cfg.teacher, stage)
        with display.stage(f"iter {k} · {label}", None) as advance:
            try:
                rows = generate_rationales(items, self.refiner if k and stage == "teach" else self.teacher,
                                           teacher_cfg, path, usage,
                                           examples=examples, progress=progress, seed=self.cfg.seed,
                                           budget=budget)
            finally:
                save(force=True)
        total = usage.merged(earlier)
        info: StageUsage = {"usage": total.to_dict(), "invocations": invocations, "summary": summarize(rows),
                "cost_usd": total.cost(self.cfg.teacher.price)}
        write_json(self.store.stage_usage_file(k, stage), info)
        self.store.mark_done(k, stage)
        partial.unlink(missing_ok=True)
        return rows

    def worked_examples(self) -> list[dict[str, str]]:
        """teacher.few_shot worked examples, shown in every teacher prompt: the task's gold
        rationales where it has them; otherwise the teacher's own verified zero-shot rationales
        of the first train questions (never val or test), made once (iter_0/examples.jsonl;
        in the concise style topped up from a stepwise pass cut to its calculations)."""
        if self._examples is None:
            n, train = self.cfg.teacher.few_shot, self.splits["train"]
            self._examples = few_shot_examples(train, n)
            if n and not self._examples:
                def run_pass(stage: str, records: list[Record]) -> list[RationaleRow]:
                    return self.teach(0, [TeachItem(r) for r in records], f"teacher writes worked examples "
                                      f"({stage})", [], stage=stage)

                self._examples = teacher_examples(train, n, self.cfg.teacher.style, run_pass)
                if len(self._examples) < n:
                    display.info(f"worked examples: the teacher verified {len(self._examples)} of the {n} "
                                 f"asked for in {len(example_candidates(train, n))} zero-shot tries; "
                                 "going on with those")
        return self._examples

    def repeat(self, k: int, items: list[TeachItem]) -> list[RationaleRow]:
        """loop.refine=repeat: each failed question's refinement is its previous verified
        rationale again (teacher.refine_samples copies, the most a refinement adds), with no
        teacher call; written as iteration k's rationales so the run folder reads as usual."""
        def again(it: TeachItem) -> tuple[str | None, str]:
            old = it.context.get("previous_rationale")
            return old, "repeat" if old else "no_rationale"

        return self.written_refinements(k, items, again, "repeat")

    def written_refinements(self, k: int, items: list[TeachItem],
                            refine: Callable[[TeachItem], tuple[str | None, str]], mode: str,
                            usage_extra: dict[str, Any] | None = None) -> list[RationaleRow]:
        """Iteration k's refine stage written without a teacher: `refine(item)` gives each
        question's (text or None, reason); rows as the teacher stage writes them (mode `mode`,
        teacher.refine_samples copies of the text), a zero usage (plus `usage_extra`, read
        after every item is done), the stage marked done. Resumes like any stage."""
        path = self.store.rationales_file(k)
        if not self.store.done(k, "teach"):
            path.unlink(missing_ok=True)
            copies = self.cfg.teacher.refine_samples
            for it in items:
                text, reason = refine(it)
                r = it.record
                row: RationaleRow = {
                    "id": r.id, "question": r.question, "answer": r.answer, "choices": r.choices,
                    "rationale": text, "rationales": [text] * copies if text else [],
                    "verdict": VERIFIED if text else FAILED, "reason": reason,
                    "mode": mode, "attempts": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
                append_jsonl(path, row)
            # StageUsage, plus the keys of usage_extra
            write_json(self.store.teacher_usage_file(k), {
                "usage": Usage().to_dict(), "invocations": 1,
                "summary": summarize(list(read_rationale_rows(path))),
                "cost_usd": None, **(usage_extra or {})})
            self.store.mark_done(k, "teach")
        return list(read_rationale_rows(path))

    def teacher_budget(self, k: int) -> TeacherBudget | None:
        """What the teacher may still spend at iteration k's stage (None: no budget set)."""
        b, t = self.cfg.loop.budget, self.cfg.teacher
        if not b.limited:
            return None
        spent = spent_before([self.store.teacher_usage_file(j) for j in range(k)]
                             + [self.store.teacher_usage_partial_file(k)]
                             + [self.store.stage_usage_file(0, st, partial)
                                for st in EXAMPLE_STAGES for partial in (False, True)])
        ratio = measured_bytes_per_token([self.store.rationales_file(j) for j in range(k + 1)])
        return TeacherBudget(
            tokens_left=None if b.teacher_tokens is None
            else b.teacher_tokens - spent.prompt_tokens - spent.completion_tokens,
            cost_left=None if b.cost is None else b.cost - (spent.cost(t.price) or 0.0),
            price=t.price, bytes_per_token=ratio, max_tokens=t.max_tokens)

    def attempts(self, k: int | str, split: str, student_dir: str) -> dict[str, StudentAttempt]:
        """The student's graded answers on a split (eval and diagnose share this)."""
        from undo.student.evaluate import evaluate

        stage_name = f"attempts_{split}"
        path = self.store.attempts_file(k, split)
        if not self.store.done(k, stage_name):
            records = self.splits[split]
            with display.stage(f"iter {k} · student answers {split}", len(records)) as advance:
                evaluate(records, student_dir, self.cfg.student, out_path=path, progress=advance)
            self.store.mark_done(k, stage_name)
        rows = {a["id"]: a for a in read_attempt_rows(path)}
        missing = [r.id for r in self.splits[split] if r.id not in rows]
        if missing:  # a score over part of a split would be a different number, silently
            raise UserError(f"{path}: no attempt for {len(missing)} of the {len(self.splits[split])} "
                            f"{split} questions (e.g. {missing[0]}); delete the file and "
                            f"{self.store.iter_dir(k) / '.done' / stage_name} to redo it")
        return {r.id: rows[r.id] for r in self.splits[split]}

    def score(self, k: int | str, student_dir: str, metrics: IterationMetrics) -> None:
        """val/test accuracy and counts of the student at `student_dir` into metrics."""
        for split in ("val", "test"):
            att = self.attempts(k, split, student_dir)
            metrics[f"{split}_acc"] = sum(a["correct"] for a in att.values()) / max(len(att), 1)
            metrics[f"{split}_n"] = len(att)

    def train(self, k: int | str, rows: list[TrainRow], init_from: str) -> dict[str, Any]:
        from undo.student.fit import fit
        from undo.student.train import make_example

        out_dir = self.store.student_dir(k)
        if self.store.done(k, "train"):
            return read_json(train_result_file(out_dir))
        by_id = {r.id: r for r in self.splits["train"]}
        examples = [make_example(by_id[row["id"]], row["rationale"]) for row in rows]
        if not examples:
            raise UserError(f"iteration {k}: no verified rationale to train on "
                            "(see rationales.jsonl for why each question failed)")
        cfg = self.cfg
        if k not in (0, "base") and cfg.train.refine_epochs is not None:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
                update={"epochs": cfg.train.refine_epochs})})
        if cfg.train.match_steps_of:
            steps = matched_steps(Path(cfg.train.match_steps_of))
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
                update={"max_steps": steps})})
        if self.trackers:  # the loop logs the loss itself, in one tracker run for all iterations
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
                update={"report_to": self.trackers.others or "none"})})
        display.info(f"iter {k}: training on {len(examples)} examples")
        fit(examples, out_dir, cfg, init_from)
        self.store.mark_done(k, "train")
        return read_json(train_result_file(out_dir))

    # ---- history helpers -----------------------------------------------------------

    def teacher_history(self, upto: int) -> dict[str, list[dict[str, Any]]]:
        """id -> verified teacher rationales from iterations < upto, oldest first."""
        hist: dict[str, list[dict[str, Any]]] = {}
        for j in range(upto):
            for row in read_rationale_rows(self.store.rationales_file(j)):
                if row.get("rationale"):
                    hist.setdefault(row["id"], []).append(
                        {"iteration": j, "rationale": row["rationale"]})
        return hist

    def val_history(self, upto: int) -> list[tuple[int, float]]:
        out = []
        for j in range(upto):
            p = self.store.metrics_file(j)
            if p.exists():
                out.append((j, read_metrics(p)["val_acc"]))
        return out

    # ---- one iteration -------------------------------------------------------------

    def iteration(self, k: int) -> IterationMetrics | None:
        """Run (or resume) iteration k; None when the student already solves all of train."""
        mpath = self.store.metrics_file(k)
        if mpath.exists():
            return read_metrics(mpath)
        t0 = time.time()
        cfg, train = self.cfg, self.splits["train"]
        metrics: IterationMetrics = {"iteration": k}
        # worked examples show the solution format in every teacher prompt, refinements included
        shots = self.worked_examples()
        if k == 0:
            rows = self.teach(0, [TeachItem(r) for r in train], "teacher explains", shots)
            data, counts = mix_training_set("replace", 0, train, {}, {},
                                            {r["id"]: r["rationale"] for r in rows
                                             if r["rationale"]}, [])
            metrics.update({"train_errors": None, "refined_verified": None, "refined_failed": None})
        else:
            mixed = self._refine_and_mix(k, metrics)
            if mixed is None:
                return None
            data, counts = mixed
        data_path = self.store.train_data_file(k)
        if not self.store.done(k, "mix"):
            write_jsonl(data_path, data)
            self.store.mark_done(k, "mix", {"sources": counts})
        data = list(read_train_rows(data_path))
        metrics["train_examples"] = len(data)
        metrics["sources"] = counts
        init = (str(self.store.student_dir(k - 1))
                if k > 0 and cfg.loop.student_init == "continue" else cfg.student.model)
        tr = self.train(k, data, init)
        metrics["steps"] = tr.get("steps")
        student_dir = str(self.store.student_dir(k))
        self.score(k, student_dir, metrics)
        # iteration 0's teacher work includes the zero-shot pass that wrote worked examples
        usages: list[UsageCounts] = [read_json(p)["usage"] for p in [self.store.teacher_usage_file(k)]
                  + ([self.store.stage_usage_file(0, st) for st in EXAMPLE_STAGES] if k == 0 else [])
                  if p.exists()]
        metrics["teacher_tokens"] = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)
                                        for u in usages)
        metrics["teacher_requests"] = sum(u.get("requests", 0) for u in usages)
        metrics["wall_s"] = round(time.time() - t0, 1)  # of this process; resumes restart it
        write_json(mpath, metrics)
        return metrics

    def _refine_and_mix(self, k: int,
                        metrics: IterationMetrics) -> tuple[list[TrainRow], dict[str, int]] | None:
        """Iteration k >= 1 up to its training set: diagnose the previous student on train,
        have the failed questions refined (or repeated), and mix. None: nothing failed."""
        cfg, train = self.cfg, self.splits["train"]
        prev_dir = str(self.store.student_dir(k - 1))
        diag = self.attempts(k, "train", prev_dir)
        check = cfg.teacher.check_steps
        wrong = sum(not solved(a, check) for a in diag.values())
        metrics["train_errors"] = wrong
        if wrong == 0:
            return None
        val_prev = list(read_attempt_rows(self.store.attempts_file(k - 1, "val")))
        profile = student_profile(self.val_history(k), val_prev, cfg.loop.val_errors_shown,
                                  cfg.seed + k) if cfg.loop.val_errors_shown else None
        history = self.teacher_history(k)
        items = refine_items(train, diag, history, profile, cfg.teacher.history, check,
                             cfg.teacher.show_attempt)
        if cfg.loop.refine == "repeat":
            refined = {r["id"]: r for r in self.repeat(k, items)}
        elif cfg.loop.budget.limited:
            # what the budget cannot cover is skipped from the end: the questions wrong in
            # the most diagnoses so far (the hardest) go first
            wrong_before = {r.id: 0 for r in train}
            for j in range(1, k + 1):  # the diagnoses of students 0..k-1
                for a in read_attempt_rows(self.store.attempts_file(j, "train")):
                    wrong_before[a["id"]] += not a["correct"]
            items.sort(key=lambda it: -wrong_before[it.record.id])
        if cfg.loop.refine == "teacher":
            refined = {r["id"]: r for r in self.teach(k, items, "teacher refines", self.refine_shots())}
        metrics["budget_skipped"] = sum(r["reason"] == "budget" for r in refined.values())
        metrics["refined_verified"] = sum(1 for r in refined.values() if r["rationale"])
        metrics["refined_failed"] = len(refined) - metrics["refined_verified"]
        metrics["tailoring"] = tailoring(items, refined)
        latest = {i: h[-1]["rationale"] for i, h in history.items()}
        prev_rows = list(read_train_rows(self.store.train_data_file(k - 1)))
        return mix_training_set(cfg.loop.mix, k, train, diag, refined, latest, prev_rows, check)

    def base_eval(self) -> IterationMetrics:
        """The untrained student on val and test: the row every comparison starts from."""
        path = self.store.metrics_file("base")
        if path.exists():
            return read_metrics(path)
        m: IterationMetrics = {"iteration": "base"}
        self.score("base", self.cfg.student.model, m)
        write_json(path, m)
        return m

    def run(self) -> Summary:
        from undo.outputs.tracking import Trackers

        self.prepare()
        self.trackers = Trackers(self.cfg.train.report_to, self.store.root, self.cfg.name)
        try:
            return self._run()
        finally:
            self.trackers.close()

    def _track(self, rows: list[IterationMetrics], m: IterationMetrics) -> None:
        """Iteration m's training loss (its own step range) and metrics, to the trackers."""
        if not self.trackers:
            return
        offset = sum(r.get("steps") or 0 for r in rows if isinstance(r.get("iteration"), int)
                     and r["iteration"] < m["iteration"])
        if isinstance(m.get("iteration"), int):
            tr = read_json(train_result_file(self.store.student_dir(m["iteration"])))
            self.trackers.log_training(tr["losses"], tr["loss_steps"], offset)
            offset += m.get("steps") or 0
        from undo.outputs.tracking import iteration_metrics

        usage = self.store.teacher_usage_file(m["iteration"])
        cost = read_json(usage).get("cost_usd") if usage.exists() else None
        self.trackers.log(iteration_metrics(m, cost), offset)

    def _run(self) -> Summary:
        cfg = self.cfg
        display.info(f"run folder: {self.store.root}  ·  train {len(self.splits['train'])}, "
                     f"val {len(self.splits['val'])}, test {len(self.splits['test'])}")
        # every refusal the config can cause comes before any model work (undo/loop/plan.py)
        preflight(cfg, self.splits)
        if not self.store.done(0, "teach"):
            _ = self.teacher  # builds the backend and health-checks the endpoint
        fresh: list[int | str] = [] if self.store.metrics_file("base").exists() else ["base"]
        rows: list[IterationMetrics] = [self.base_eval()] if cfg.loop.eval_base else []
        if fresh and rows:
            self._track(rows, rows[0])
        best_k, best_val, stop_reason = self._iterate(rows, fresh)
        summary = self._summarize(rows, fresh, best_k, best_val, stop_reason)
        self._announce(summary)
        return summary

    def _iterate(self, rows: list[IterationMetrics], fresh: list[int | str]) -> tuple[int | None, float, str]:
        """The iterations until the loop stops; each one's metrics row appended to `rows`.
        Returns (best iteration by val, its val accuracy, why the loop stopped)."""
        cfg = self.cfg
        last = 0 if cfg.loop.method == "oneshot" else cfg.loop.max_iterations
        best_k, best_val, stale, stop_reason = None, -1.0, 0, "max_iterations"
        for k in range(last + 1):
            if not self.store.metrics_file(k).exists():
                fresh.append(k)
            try:
                m = self.iteration(k)
            except BudgetSpent as e:
                stop_reason = str(e)
                break
            if m is None:
                stop_reason = "student solves all of train"
                break
            rows.append(m)
            if k in fresh:  # logged once, by the invocation that computed it
                self._track(rows, m)
            display.console.print(display.metrics_table(rows))
            gain = m["val_acc"] - best_val
            if m["val_acc"] > best_val:
                best_k, best_val = k, m["val_acc"]
            if k == 0 or gain > cfg.loop.min_delta:
                stale = 0
            else:
                stale += 1
                if stale >= cfg.loop.patience:
                    what = f"above loop.min_delta={cfg.loop.min_delta}" if cfg.loop.min_delta else "improvement"
                    stop_reason = f"no val {what} for {stale} iteration(s)"
                    break
        return best_k, best_val, "oneshot" if cfg.loop.method == "oneshot" else stop_reason

    def _summarize(self, rows: list[IterationMetrics], fresh: list[int | str], best_k: int | None,
                   best_val: float, stop_reason: str) -> Summary:
        """summary.json, flow.json and the report of the finished loop (and the flow's curves)."""
        cfg = self.cfg
        iters = [r for r in rows if isinstance(r.get("iteration"), int)]
        last_k = max(r["iteration"] for r in iters)
        if cfg.loop.method == "undo" and cfg.loop.flow_train_eval and last_k > 0:
            # the last student on train, stored as the next iteration's diagnosis would be
            # (a resumed run with more iterations reuses it): the flow's last transition
            self.attempts(last_k + 1, "train", str(self.store.student_dir(last_k)))
        summary: Summary = {
            "name": cfg.name,
            "method": cfg.loop.method,
            "best_iteration": best_k,
            "best_val_acc": best_val,
            "best_test_acc": next(r["test_acc"] for r in iters if r["iteration"] == best_k),
            "stop_reason": stop_reason,
            "total_steps": sum(r.get("steps") or 0 for r in iters),
            "teacher_tokens": sum(r.get("teacher_tokens") or 0 for r in iters),
            "wall_s": round(sum(r.get("wall_s") or 0 for r in iters), 1),
            "iterations": rows,
            "best_student": str(self.store.student_dir(best_k)),
        }
        b = cfg.loop.budget
        if b.limited:
            spent = spent_before([self.store.teacher_usage_file(r["iteration"]) for r in iters])
            summary["budget"] = budget_summary(b.teacher_tokens, b.cost, spent, cfg.teacher.price)
        from undo.outputs.flow import flow_summary
        from undo.outputs.report import headline, write_report

        if cfg.loop.method == "undo":
            summary["headline"] = headline(self.store.root, best_k)
        flow = flow_summary(self.store.root)  # per question: flow.json; the counts: here
        write_json(self.store.flow_file, flow)
        summary["flow"] = flow["counts"]
        if self.trackers and fresh:  # the flow is complete only now: each iteration at its step
            from undo.outputs.tracking import flow_metrics

            step = 0
            for r in iters:
                step += r.get("steps") or 0
                self.trackers.log(flow_metrics(flow["counts"], r["iteration"]), step)
        write_json(self.store.summary_file, summary)
        write_report(self.store.root)
        return summary

    def _announce(self, summary: Summary) -> None:
        """The end of a run on the terminal: the headline, the best iteration, one story."""
        cfg = self.cfg
        if summary.get("headline", {}).get("rows"):
            display.console.print(display.headline_table(summary["headline"]))
            display.info(summary["headline"]["sentence"])
        display.info(f"best iteration {summary['best_iteration']} (val {summary['best_val_acc']:.1%}, test "
                     f"{summary['best_test_acc']:.1%}); stopped: {summary['stop_reason']}")
        if cfg.loop.method == "undo" and cfg.loop.refine == "teacher":
            from undo.outputs.flow import fixed_story

            for line in fixed_story(self.store.root, cfg.teacher.show_attempt):
                display.console.print(line, markup=False, highlight=False)  # model text, not markup

