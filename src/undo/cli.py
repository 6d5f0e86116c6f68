"""The `undo` command: a thin shell over library functions the tests call too.

Every subcommand takes the run config's sections as dotted `key=value`
overrides (e.g. `teacher.model=NAME loop.patience=2`), optionally on top of a
YAML file given with --config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from undo.errors import UserError
from undo.grading import ANSWER_TYPES

app = typer.Typer(
    help=(
        "undo: distil a teacher LLM's reasoning into a small student with UNDO "
        "(UNderstanding Distillation as Optimization, arXiv 2504.02521).\n\n"
        "Quick start (offline, CPU):  undo demo\n\n"
        "Real run:  undo run gsm8k teacher.openai.base_url=http://HOST:8000/v1\n"
        "(undo configs: the shipped ones)"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
cache_app = typer.Typer(help="Inspect or clear the teacher completion cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

Overrides = Annotated[
    Optional[list[str]],  # noqa: UP045  (typer needs Optional on 3.10)
    typer.Argument(help="config overrides as key=value, e.g. task.source=PATH splits.train=100"),
]
ConfigOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--config", "-c", help="a run YAML, or a shipped config's name (undo configs)")]


def _config(path: Path | None, overrides: list[str] | None, **forced: object):
    from undo.registries import load

    items = list(overrides or []) + [f"{k}={v}" for k, v in forced.items() if v is not None]
    return load(path, items)


def _emit(obj: dict) -> None:
    print(json.dumps(obj))


@app.command()
def data(
    task: Annotated[str, typer.Argument(help="a registered task (gsm8k, svamp, ...) or 'file'")],
    overrides: Overrides = None,
    split: Annotated[str, typer.Option(help="train | val | test")] = "train",
    limit: Annotated[Optional[int], typer.Option(help="print at most N records")] = None,  # noqa: UP045
    config: ConfigOpt = None,
) -> None:
    """Print a task's normalised records as JSONL.

    Example: undo data svamp --split test --limit 3 task.source=../shared/data/svamp
    """
    from undo.tasks import split_part

    cfg = _config(config, overrides, **{"task.name": task})
    records = split_part(cfg, split)
    for r in records[:limit] if limit is not None else records:
        print(json.dumps(r.to_dict(), ensure_ascii=False))


@app.command()
def grade(
    file: Annotated[Path, typer.Argument(help='JSONL rows {"output", "answer", "choices"?}')],
    answer_type: Annotated[str, typer.Option("--answer-type", help="|".join(ANSWER_TYPES))],
    details: Annotated[bool, typer.Option("--details", help="also print a verdict per row")] = False,
) -> None:
    """Grade model outputs against gold answers; prints {"n","correct","accuracy","unparsed"}.

    Example: undo grade outputs.jsonl --answer-type number --details
    """
    from undo.grading import answer_type as lookup
    from undo.grading import grade as grade_one
    from undo.tasks.readers import field, read_rows

    try:
        lookup(answer_type)  # fail before reading the file, naming the known types
    except ValueError as e:
        raise UserError(str(e)) from None
    n = correct = unparsed = 0
    for where, row in read_rows(file):
        v = grade_one(str(field(row, "output", where)), str(field(row, "answer", where)),
                      answer_type, row.get("choices"))
        n += 1
        correct += v.correct
        unparsed += v.predicted is None
        if details:
            _emit({"row": where, "predicted": v.predicted, "correct": v.correct})
    _emit({"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "unparsed": unparsed})


Config = Annotated[Optional[Path], typer.Argument(  # noqa: UP045
    help="a run YAML, or a shipped config's name: gsm8k, svamp, ... (undo configs)")]


@app.command()
def run(
    config: Config = None,
    overrides: Overrides = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="resolve and plan; call nothing")] = False,
) -> None:
    """Run UNDO (or the one-shot baseline) end to end; re-run the same command to resume.

    Example: undo run svamp teacher.openai.base_url=http://localhost:8000/v1 name=svamp-1
    """
    # only key=value given: the first one landed in `config` (its value may hold a "/")
    if config is not None and "/" not in str(config).split("=", 1)[0] and "=" in str(config) \
            and not config.exists():
        overrides, config = [str(config), *(overrides or [])], None
    cfg = _config(config, overrides)
    if dry_run:
        from undo.loop.plan import plan

        print(json.dumps(plan(cfg), indent=2))
        return
    from undo.api import run as run_loop

    summary = run_loop(cfg)
    _emit({k: summary[k] for k in ("best_iteration", "best_val_acc", "best_test_acc",
                                   "stop_reason", "total_steps")})


@app.command()
def demo(
    overrides: Overrides = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
) -> None:
    """The offline demo: generated sums, in-process Qwen2.5-Coder-0.5B teacher, SmolLM2-135M student.

    Same as: undo run demo
    """
    run(_demo_config(), overrides, dry_run)


def _demo_config() -> Path:
    from undo.config import shipped_configs

    return shipped_configs()["demo"]


@app.command(name="configs")
def configs_cmd() -> None:
    """The shipped configs, usable by name: `undo run NAME [key=value ...]`."""
    from undo.config import shipped_configs

    for name, path in shipped_configs().items():
        comments = [line.lstrip("# ").rstrip() for line in path.read_text().splitlines()
                    if line.startswith("#")]
        print(f"{name:<15} {comments[0] if comments else ''}")


@app.command(name="keys")
def keys_cmd(
    prefix: Annotated[str, typer.Argument(help="only this key or section and the keys under it, e.g. "
                                          "teacher.openai")] = "",
) -> None:
    """Every config key: name, type, default (as key=value writes it) and what it does.

    Example: undo keys teacher.openai
    """
    from undo.config import describe_keys

    rows = describe_keys(prefix)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(col.ljust(w) for col, w in zip(row[:3], widths, strict=True)) + "  " + row[3])


@app.command()
def teach(
    task: Annotated[str, typer.Argument(help="a registered task or 'file'")],
    out: Annotated[Path, typer.Option("--out", help="JSONL of verified rationales")],
    overrides: Overrides = None,
    split: Annotated[str, typer.Option(help="train | val (never test)")] = "train",
    limit: Annotated[Optional[int], typer.Option(help="first N questions")] = None,  # noqa: UP045
    config: ConfigOpt = None,
) -> None:
    """Have the teacher explain questions; keep rationales whose answer grades correct.

    Resumable: re-running skips questions already in --out, and the completion
    cache answers every request already made.

    Example: undo teach gsm8k --out r.jsonl --limit 100 teacher.backend=openai
    teacher.openai.base_url=http://127.0.0.1:8000/v1 teacher.model=Qwen/Qwen2.5-72B-Instruct
    """
    from undo.api import teach as teach_split

    cfg = _config(config, overrides, **{"task.name": task})
    stats = teach_split(cfg, out, split, limit)
    _emit(stats["summary"])


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="JSONL with question + rationale")],
    out: Annotated[Path, typer.Option("--out", help="folder for the trained student")],
    overrides: Overrides = None,
    config: ConfigOpt = None,
    launcher: Annotated[Optional[str], typer.Option(help="none | accelerate | torchrun")] = None,  # noqa: UP045
    num_processes: Annotated[Optional[int], typer.Option("--num-processes")] = None,  # noqa: UP045
) -> None:
    """Fine-tune the student on a rationale file (such as `undo teach` writes).

    Rows need `question` and `rationale` (rows with rationale null are skipped).
    Example: undo train --data r.jsonl --out students/s1 student.model=smollm2-135m-instruct train.epochs=2
    """
    from undo.api import train as train_student

    cfg = _config(config, overrides, **{"train.launcher": launcher,
                                         "train.num_processes": num_processes})
    _emit(train_student(cfg, data, out))


@app.command(name="eval")
def eval_(
    task: Annotated[str, typer.Argument(help="a registered task or 'file'")],
    student: Annotated[str, typer.Option("--student", help="saved student folder, hub id or offline name")],
    overrides: Overrides = None,
    split: Annotated[str, typer.Option(help="train | val | test")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="first N questions")] = None,  # noqa: UP045
    out: Annotated[Optional[Path], typer.Option("--out", help="per-question attempts JSONL")] = None,  # noqa: UP045
    config: ConfigOpt = None,
) -> None:
    """Score a student the way the loop does; the last line is {"n","correct","accuracy"}.

    Example: undo eval svamp --student runs/demo/iter_1/student task.source=../shared/data/svamp
    """
    from undo.api import evaluate

    cfg = _config(config, overrides, **{"task.name": task})
    _emit(evaluate(cfg, student, split, limit, out))


@app.command()
def transfer(
    run_dir: Annotated[Path, typer.Argument(help="a finished undo run folder")],
    student: Annotated[Optional[str], typer.Option("--student", help="the new student model")] = None,  # noqa: UP045
    students: Annotated[Optional[str], typer.Option(help="several students, comma-separated")] = None,  # noqa: UP045
    iteration: Annotated[Optional[str], typer.Option(help="whose training set: K or best (default)")] = None,  # noqa: UP045
    iterations: Annotated[Optional[str], typer.Option(help="several, comma-separated: 0,best")] = None,  # noqa: UP045
    overrides: Overrides = None,
    n_boot: Annotated[int, typer.Option("--n-boot")] = 10_000,
) -> None:
    """Train and evaluate other students on a finished run's training sets: one cell, or a
    matrix of students x iterations with paired 95% CIs against each student's first cell
    (saved as RUN/transfer_matrix.json; cells resume).

    Example: undo transfer runs/svamp-undo --students Qwen/Qwen2.5-0.5B-Instruct,smollm2-135m-instruct
    --iterations 0,best
    """
    from undo.outputs.report import matrix_lines
    from undo.outputs.transfer import transfer_matrix

    names = [s.strip() for s in (students or student or "").split(",") if s.strip()]
    if not names:
        raise UserError("transfer: name a student (--student MODEL or --students A,B)")
    its = [s.strip() for s in (iterations or iteration or "best").split(",") if s.strip()]
    m = transfer_matrix(run_dir, names, its, list(overrides or []), n_boot)
    print("\n".join(matrix_lines(m)))
    _emit(m)


@app.command()
def flow(
    run_dir: Annotated[Path, typer.Argument(help="an undo run folder")],
    question: Annotated[Optional[str], typer.Option("--question", help="one question's story, by id")] = None,  # noqa: UP045
) -> None:
    """What the loop did to each question: fixed, broken, stuck, never refined, per iteration;
    or one question's answers, verdicts and the refined explanations beside its errors.

    Example: undo flow runs/demo --question chain_sum-84401a404fc1
    """
    from undo.outputs.flow import flow_markdown, learning_flow, question_story

    if question:
        print("\n".join(question_story(run_dir, question)))
        return
    fl = learning_flow(run_dir)
    print(flow_markdown(fl) or "no iteration after the first: nothing flowed yet")
    _emit({"counts": fl["counts"]})


@app.command(name="export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="an undo run folder")],
    out: Annotated[Path, typer.Option("--out", help="the dataset folder to write")],
    iteration: Annotated[str, typer.Option(help="K, or 'best' (by val)")] = "best",
    push_to_hub: Annotated[Optional[str], typer.Option(help="also upload to this hub dataset repo")] = None,  # noqa: UP045
) -> None:
    """The distilled training set as a Hugging Face dataset: save_to_disk (out/hf), Parquet
    (out/data) and a dataset card (out/README.md: teacher, student, method, accuracies, config).

    Example: undo export runs/gsm8k-undo --out distilled/gsm8k --push-to-hub me/gsm8k-undo
    """
    from undo.outputs.export import export_dataset

    if iteration != "best" and not iteration.isdigit():
        raise UserError(f"--iteration: expected a number or 'best' (got '{iteration}')")
    _emit(export_dataset(run_dir, out, iteration, push_to_hub))


@app.command(name="export-model")
def export_model_cmd(
    run_dir: Annotated[Path, typer.Argument(help="an undo run folder")],
    out: Annotated[Path, typer.Option("--out", help="the model folder to write")],
    iteration: Annotated[Optional[int], typer.Option(help="whose student; default best by val")] = None,  # noqa: UP045
    dtype: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="float32 | bfloat16 | float16; default the base's")] = None,
) -> None:
    """A run's student as one model folder: LoRA merged into the weights, tokenizer with its
    chat template, and a model card (teacher, task, method, accuracy). Loads with
    transformers and `vllm serve`.

    Example: undo export-model runs/gsm8k-undo --out models/gsm8k-student
    """
    from undo.outputs.export import export_model

    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise UserError(f"--dtype: unknown dtype '{dtype}' (float32 | bfloat16 | float16)")
    _emit(export_model(run_dir, out, iteration, dtype))


@app.command(name="compare")
def compare_cmd(
    arms: Annotated[list[str], typer.Argument(
        help="one arm per argument: a run folder (RUN@K: iteration K, RUN@base), or several separated "
             "by commas, one per seed, in the same seed order for every arm; the first arm is the reference")],
    n_boot: Annotated[int, typer.Option("--n-boot")] = 10_000,
) -> None:
    """Test accuracies side by side, and each arm minus the first with a 95% CI.

    With one run per arm the interval resamples questions (paired). With several runs per arm
    (one per seed) it resamples seeds, then questions within each: it covers training noise too.

    Examples: undo compare runs/svamp-undo@0 runs/svamp-undo@base runs/svamp-undo;
    undo compare runs/oneshot-s1,runs/oneshot-s2,runs/oneshot-s3 runs/undo-s1,runs/undo-s2,runs/undo-s3
    """
    from undo.outputs.report import compare

    rows = compare([a.split(",") for a in arms], n_boot)
    for r in rows:
        each = "  per seed " + ", ".join(f"{x:.1%}" for x in r["per_seed"]) if r["seeds"] > 1 else ""
        ci = (f"  diff {r['diff']:+.1%}  95% CI [{r['ci_low']:+.1%}, {r['ci_high']:+.1%}]"
              + ("  per seed " + ", ".join(f"{x:+.1%}" for x in r["diff_per_seed"]) if r["seeds"] > 1 else "")
              if "diff" in r else "  (reference)")
        print(f"{r['run']:<40} n={r['n']:<5} test {r['test_acc']:.1%} [{r['acc_ci_low']:.1%}, "
              f"{r['acc_ci_high']:.1%}]{ci}{each if 'diff' not in r else ''}")
    _emit({"rows": rows})


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """(Re)write report.md, report.html and plots/ of a finished run."""
    from undo.outputs.report import write_report

    print(write_report(run_dir))


@cache_app.command("stats")
def cache_stats() -> None:
    """Entries, size and per-model counts of the completion cache."""
    from undo.teacher.cache import CompletionCache

    with CompletionCache() as c:
        print(json.dumps(c.stats(), indent=2))


@cache_app.command("clear")
def cache_clear(
    model: Annotated[Optional[str], typer.Option(help="only this model's entries")] = None,  # noqa: UP045
) -> None:
    """Delete cached completions (all, or one model's)."""
    from undo.teacher.cache import CompletionCache

    with CompletionCache() as c:
        _emit({"removed": c.clear(model)})


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the same command again to resume",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
