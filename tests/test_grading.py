"""Grading rules on real dataset rows and hostile model outputs (no model loading)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from undo.errors import UserError
from undo.grading import (
    ANSWER_TYPES,
    AnswerType,
    Verdict,
    answer_line,
    answer_type,
    extract_answer,
    grade,
)

DATA = Path(__file__).resolve().parent / "fixtures" / "data"  # slices of the release files

OPTIONS = ["bank", "library", "department store", "mall", "new york"]


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --- real data: every gold answer written the way the teacher is asked to must pass ---


def test_gsm8k_gold_rationales_all_correct() -> None:
    rows = _jsonl(DATA / "gsm8k" / "train.jsonl")
    correct = sum(
        grade(r["answer"], r["answer"].rsplit("####", 1)[1].strip(), "number").correct for r in rows
    )
    assert correct == len(rows) == 41


def test_gsm8k_real_rows() -> None:
    rows = _jsonl(DATA / "gsm8k" / "train.jsonl")
    first = rows[0]["answer"]  # "... 48+24 = <<48+24=72>>72 clips ...\n#### 72"
    assert grade(first, "72", "number") == Verdict(True, "72")
    # Without the "####" line the last number of the rationale is still 72.
    assert extract_answer(first.rsplit("####", 1)[0], "number") == "72"
    assert not grade(first, "73", "number").correct
    # Gold with thousands separators ("1,080") is normalised too.
    gold_commas = next(r for r in rows if "," in r["answer"].rsplit("####", 1)[1])
    gold = gold_commas["answer"].rsplit("####", 1)[1].strip()
    assert grade(answer_line(gold.replace(",", "")), gold, "number").correct
    assert grade(gold_commas["answer"], gold.replace(",", ""), "number").correct


def test_svamp_float_and_int_answers() -> None:
    rows = json.loads((DATA / "svamp" / "SVAMP.json").read_text(encoding="utf-8"))
    assert rows[0]["Answer"] == 51.0
    as_float = sum(
        grade(f"The answer is {r['Answer']}", str(r["Answer"]), "number").correct for r in rows
    )
    as_int = sum(
        grade(f"The answer is {int(r['Answer'])}", str(r["Answer"]), "number").correct for r in rows
    )
    assert (as_float, as_int) == (len(rows), len(rows)) == (200, 200)


def test_strategyqa_gold_all_correct() -> None:
    examples = json.loads((DATA / "strategyqa" / "task.json").read_text("utf-8"))["examples"]
    golds = ["Yes" if e["target_scores"]["Yes"] == 1 else "No" for e in examples]
    correct = sum(grade(f"The answer is {g}.", g.lower(), "yesno").correct for g in golds)
    assert correct == len(examples) == 61
    # The BIG-bench "target" rationale starts with the verdict ("Yes. College ...").
    assert all(
        grade(e["target"], g, "yesno").correct
        for e, g in zip(examples[:50], golds[:50], strict=True)
    )


@pytest.mark.parametrize(("split", "count"), [("train", 40), ("dev", 10)])
def test_commonsenseqa_gold_all_correct(split: str, count: int) -> None:
    rows = _jsonl(DATA / "commonsenseqa" / f"{split}_rand_split.jsonl")
    by_letter = by_text = 0
    for r in rows:
        choices = [c["text"] for c in r["question"]["choices"]]
        key = r["answerKey"]
        text = choices["ABCDE".index(key)]
        by_letter += grade(f"The answer is ({key}) {text}.", key, "choice", choices).correct
        by_text += grade(f"The answer is {text}.", key, "choice", choices).correct
    assert (by_letter, by_text) == (count, count) == (len(rows), len(rows))


def test_commonsenseqa_wrong_letter_is_wrong() -> None:
    row = _jsonl(DATA / "commonsenseqa" / "dev_rand_split.jsonl")[0]
    choices = [c["text"] for c in row["question"]["choices"]]
    wrong = next(letter for letter in "ABCDE" if letter != row["answerKey"])
    assert not grade(f"The answer is ({wrong}).", row["answerKey"], "choice", choices).correct


# --- number ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 72.", "72"),
        ("She had 3 apples and 5 pears. The answer is 8 apples.", "8"),
        ("The answer is 72 dollars.", "72"),
        ("The answer is 5 cm", "5"),
        ("the answer is 5th", "5"),
        ("The answer is \u22125.", "-5"),  # unicode minus
        ("The answer is \u20135", "-5"),  # en dash used as minus
        ("The temperature fell to -3 degrees.", "-3"),
        ("It took 5-10 minutes", "10"),  # a range, not -10
        ("The answer is $1,000.", "1000"),
        ("It costs \u00a32,500,000.50 in total", "2500000.5"),
        ("The answer is \u20ac12.50", "12.5"),
        ("The answer is -$5", "-5"),
        ("The answer is 50%.", "50"),
        ("The answer is 0.50", "0.5"),
        ("The answer is .5", "0.5"),
        ("answer: 2.0", "2"),
        ("The answer is 3/4", "0.75"),
        ("The answer is \\frac{3}{4}.", "0.75"),
        ("The final answer is $\\boxed{-\\dfrac{1}{2}}$.", "-0.5"),
        ("First 12, then \\boxed{{12}+{3}} hmm \\boxed{{15}}", "15"),  # nested braces
        ("#### 1,080", "1080"),
        ("Answer: 48 + 24 = 72", "72"),
        ("The answer is 8 (=2*4).", "8"),
        ("The answer is 72 (since 48 + 24 = 72)", "72"),
        ("The answer is 5.\nWait, let me recheck.\nThe answer is 6.", "6"),  # last line wins
        ("**Answer:** 17", "17"),
        ("The answer is\n\n42", "42"),
        ("The answer is unclear, but \\boxed{9}", "9"),  # unparsable line falls through
        ("I think it's 4, no wait, 7", "7"),  # no marker: last number
        ("COVID19 spread to x2y", None),  # digits inside words are not answers
        ("The answer is COVID19 and 2", "2"),
        ("no numbers here", None),
    ],
)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_answer(text, "number") == expected


def test_number_tolerance_and_gold_formats() -> None:
    # A ratio gold is exact: a 4-digit approximation is not the answer, the ratio itself is.
    assert not grade("The answer is 0.3333", "1/3", "number").correct
    assert grade("The answer is 1/3", "1/3", "number").correct
    assert grade("The answer is \\frac{1}{3}", "\\frac{1}{3}", "number").correct
    assert grade("The answer is 1000", "1,000", "number").correct
    assert grade("The answer is -3", "\u22123", "number").correct
    assert grade("The answer is 0.5", ".5", "number").correct
    assert not grade("The answer is 0.34", "1/3", "number").correct
    assert not grade("The answer is 72", "not a number", "number").correct
    assert not grade("The answer is 3 / 0", "0", "number").correct


@pytest.mark.parametrize(
    ("output", "gold", "correct"),
    [
        # integers are exact: a relative tolerance once graded 106501 correct against 106491
        ("The answer is 106501.", "106491", False),
        ("The answer is 106491.", "106491", True),
        ("The answer is 106,491.", "106491", True),
        ("The answer is 1000000.", "1000001", False),
        ("The answer is 1000001.", "1000000", False),
        ("The answer is 123456789.", "123456789", True),
        ("The answer is 123456788.", "123456789", False),
        ("The answer is 12345678901234567890.", "12345678901234567890", True),
        ("The answer is 12345678901234567891.", "12345678901234567890", False),
        ("The answer is 51.", "51.0", True),  # SVAMP writes integer golds as floats
        ("The answer is 51.0", "51", True),
        ("The answer is 51.01", "51.0", False),
        ("The answer is 1080.", "1,080", True),
        ("The answer is 1,081.", "1,080", False),
        ("The answer is 4.", "8/2", True),
        # decimals: equal to the gold at the gold's own precision
        ("The answer is 2.5.", "2.5", True),
        ("The answer is 2.50.", "2.5", True),
        ("The answer is 5/2.", "2.5", True),
        ("The answer is 2.6.", "2.5", False),
        ("The answer is 2.55.", "2.5", False),  # exactly half a unit off is not within it
        ("The answer is 2.", "2.5", False),
        ("The answer is 0.33.", "0.33", True),
        ("The answer is 0.333.", "0.33", True),  # 1/3 to the gold's two places is 0.33
        ("The answer is 1/3.", "0.33", True),
        ("The answer is 0.34.", "0.33", False),
        ("The answer is 0.3.", "0.33", False),
        ("The answer is 1/3.", "0.3333333333333333", True),  # a float repr gold
        # negatives
        ("The answer is -5.", "-5", True),
        ("The answer is 5.", "-5", False),
        ("The answer is -5.", "5", False),
        ("The answer is \u22122.5", "-2.5", True),
        ("The answer is -2.5", "2.5", False),
        ("The answer is -1/2", "-0.5", True),
        # ratio golds
        ("The answer is 0.5.", "1/2", True),
        ("The answer is 1/2.", "1/2", True),
        ("The answer is 2/4.", "1/2", True),
        ("The answer is 0.6.", "1/2", False),
        ("The answer is 2/3.", "2/3", True),
        ("The answer is 0.667.", "2/3", False),
    ],
)
def test_number_comparison(output: str, gold: str, correct: bool) -> None:
    assert grade(output, gold, "number").correct is correct


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(51.0, "51"), ("1,080", "1080"), (72, "72"), (2.5, "2.5"), (1e-05, "0.00001"),
     ("12345678901234567890", "12345678901234567890"), ("1/3", "1/3"), ("-3", "-3")],
)
def test_number_gold_parsing(raw: object, expected: str) -> None:
    gold = answer_type("number").parse_gold(raw, None, "f.jsonl:1")
    assert gold == expected
    assert grade(answer_line(gold), gold, "number").correct


@pytest.mark.parametrize("raw", ["seven", "", True])
def test_number_gold_rejects_non_numbers(raw: object) -> None:
    with pytest.raises(UserError, match="f.jsonl:3: answer .* is not a number"):
        answer_type("number").parse_gold(raw, None, "f.jsonl:3")


# --- choice ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B) library.", "B"),
        ("The answer is library.", "B"),
        ("The answer is b", "B"),
        ("Answer: (c) library", "C"),  # the letter wins over the option text
        ("The answer is D. mall", "D"),
        ("The answer is: E)", "E"),
        ("The answer is **B**", "B"),
        ("The answer is A", "A"),
        ("The answer is a library.", "B"),  # the article "a" is not option A
        ("The answer is department store, because it sells things", "C"),
        ("The answer is the mall.", "D"),
        ("\\boxed{C}", "C"),
        ("I compared (A) and (D); my final pick is (C).", "C"),  # no marker: last "(X)"
        ("B", "B"),
        ("library", "B"),
        ("The answer is F", None),  # not one of five options
        ("nothing useful", None),
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_answer(text, "choice", OPTIONS) == expected


def test_choice_prefers_exact_option_text() -> None:
    options = ["river bank", "bank", "library", "city", "new york city"]
    assert extract_answer("The answer is bank.", "choice", options) == "B"
    assert extract_answer("The answer is city", "choice", options) == "D"
    assert extract_answer("The answer is new york city.", "choice", options) == "E"


def test_choice_duplicate_option_texts_count_as_same_answer() -> None:
    # Real CommonsenseQA row: C and E are both "mississippi", gold is E.
    options = ["michigan", "wyoming", "mississippi", "tennessee", "mississippi"]
    assert grade("The answer is mississippi.", "E", "choice", options).correct
    assert not grade("The answer is michigan.", "E", "choice", options).correct


def test_choice_gold_forms() -> None:
    assert grade("The answer is (B)", "(b)", "choice", OPTIONS).correct
    assert grade("The answer is (B)", "library", "choice", OPTIONS).correct
    assert grade("The answer is (B)", "B", "choice", None).correct
    assert not grade("The answer is (A)", "B", "choice", OPTIONS).correct


def test_choice_gold_parsing_and_display() -> None:
    kind = answer_type("choice")
    for raw in ("B", "(b)", 1, "Library"):
        assert kind.parse_gold(raw, OPTIONS, "f.csv:2") == "B"
    assert kind.display("B", OPTIONS) == "(B) library"
    with pytest.raises(UserError, match="f.csv:2: answer 'zoo' is neither"):
        kind.parse_gold("zoo", OPTIONS, "f.csv:2")
    with pytest.raises(UserError, match="task.fields.choices is required"):
        kind.parse_gold("B", None, "f.csv:2")


# --- yes / no ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is Yes.", "yes"),
        ("The answer is YES", "yes"),
        ("answer: no", "no"),
        ("The answer is TRUE", "yes"),
        ("The answer is false.", "no"),
        ("**No**", "no"),
        ("No, because frost is rare in June.", "no"),
        ("Yes", "yes"),
        ("The answer is no. Yes, I'm sure.", "no"),  # the answer position wins
        ("I think there is no evidence, so yes", "yes"),  # no marker: last yes/no word
        ("1. First, consider the facts", None),
        ("Maybe", None),
    ],
)
def test_extract_yesno(text: str, expected: str | None) -> None:
    assert extract_answer(text, "yesno") == expected


@pytest.mark.parametrize("gold", ["yes", "Yes", "TRUE", "True", "1", True])
def test_yesno_gold_forms(gold: object) -> None:
    assert grade("The answer is Yes.", gold, "yesno").correct  # type: ignore[arg-type]
    assert not grade("The answer is No.", gold, "yesno").correct  # type: ignore[arg-type]


def test_yesno_gold_parsing_and_display() -> None:
    kind = answer_type("yesno")
    assert [kind.parse_gold(v, None, "w") for v in (True, "Yes.", "false", 1, "0")] == [
        "yes", "yes", "no", "yes", "no"]
    assert kind.display("yes", None) == "Yes"
    with pytest.raises(UserError, match="w: answer 'maybe' is not yes/no"):
        kind.parse_gold("maybe", None, "w")


# --- math ---


@pytest.mark.parametrize(
    ("output", "gold", "correct"),
    [
        ("The answer is $\\frac{1}{2}$.", "0.5", True),
        ("The answer is 0.5", "\\frac{1}{2}", True),
        ("\\boxed{x^2+2x}", "x(x+2)", True),
        ("\\boxed{2x + x^2}", "x^2+2x", True),
        ("so $y = 3$ and then $x^2 + 2x$", "x^2+2x", True),  # no marker: last $...$
        ("The answer is \\(\\sqrt{2}\\)", "2^{1/2}", True),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", True),
        ("The answer is 3", "4", False),
        ("\\boxed{x^2}", "x^3", False),
        ("The answer is \\frac{", "1", False),  # malformed: wrong, not a crash
    ],
)
def test_grade_math(output: str, gold: str, correct: bool) -> None:
    assert grade(output, gold, "math").correct is correct


def test_math_exact_fast_path_keeps_prediction() -> None:
    assert grade("The answer is \\frac{1}{2}.", "\\frac{1}{2}", "math") == Verdict(
        True, "\\frac{1}{2}"
    )


# --- shared behaviour ---


@pytest.mark.parametrize("kind", sorted(ANSWER_TYPES))
@pytest.mark.parametrize("output", ["", "   \n", None])
def test_empty_output_is_wrong(kind: str, output: str | None) -> None:
    choices = OPTIONS if kind == "choice" else None
    verdict = grade(output, "A", kind, choices)  # type: ignore[arg-type]
    assert verdict == Verdict(False, None)


@pytest.mark.parametrize("name", sorted(ANSWER_TYPES))
def test_registered_types_are_complete(name: str) -> None:
    kind = answer_type(name)
    assert isinstance(kind, AnswerType) and kind.name == name
    assert all(callable(f) for f in (kind.extract, kind.compare, kind.parse_gold, kind.display))
    assert kind.answer_format.strip()
    # a gold written on the answer line the way the prompt asks grades as correct
    choices = OPTIONS if name == "choice" else None
    raw = {"number": "1,080", "choice": "library", "yesno": True, "math": "\\frac{1}{2}"}[name]
    gold = kind.parse_gold(raw, choices, "w")
    assert grade(answer_line(kind.display(gold, choices)), gold, name, choices).correct


def test_registry_has_the_builtin_types() -> None:
    assert {"number", "choice", "yesno", "math"} <= set(ANSWER_TYPES)
    assert answer_type("choice").letters == "ABCDEFGHIJ"


def test_config_rejects_unknown_answer_type() -> None:
    from undo.registries import load

    assert load(overrides=["task.answer_type=yesno"]).task.answer_type == "yesno"
    with pytest.raises(UserError, match="task.answer_type") as e:
        load(overrides=["task.answer_type=bogus"])
    assert "choice, math, number, yesno" in str(e.value) and "bogus" in str(e.value)


def test_unknown_answer_type_names_known_ones() -> None:
    with pytest.raises(ValueError, match="choice, math, number, yesno"):
        grade("The answer is 1.", "1", "essay")
    with pytest.raises(ValueError):
        extract_answer("1", "essay")


def test_answer_line_round_trips() -> None:
    assert answer_line("72") == "The answer is 72."
    assert grade(answer_line("72"), "72", "number") == Verdict(True, "72")
    assert grade(answer_line("(B) library"), "B", "choice", OPTIONS).correct
    assert grade(answer_line("No"), "no", "yesno").correct
