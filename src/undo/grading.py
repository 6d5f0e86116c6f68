"""Answer extraction and comparison, one grader per answer type.

The same rules serve teacher verification, student evaluation and the CLI, so a
rationale that passes the teacher filter is graded identically when a student
writes it. Every grader first looks for an explicit answer marker (last
"The answer is X" line, then the last \\boxed{X}, then the GSM8K "#### X") and
only falls back to scanning the whole text when no marker yields an answer.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    correct: bool
    predicted: str | None  # the normalised extracted answer; None = nothing parsable


Choices = list[str] | None


@dataclass(frozen=True)
class Grader:
    """extract: text -> normalised answer; compare: (predicted, gold) -> correct."""

    extract: Callable[[str, Choices], str | None]
    compare: Callable[[str, str, Choices], bool]


def answer_line(answer: str) -> str:
    return f"The answer is {answer}."


# --- answer markers -----------------------------------------------------------

# "The answer is", "the final answer is", "Answer:"; \s* lets "Answer:\n72" reach the next line.
_ANSWER_LINE = re.compile(r"\banswer\s*(?:is\b\s*:?|:)[\s*]*(?P<seg>[^\n]*)", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####\s*(?P<seg>[^\n]*)")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, matching braces so \\boxed{\\frac{1}{2}} survives."""
    starts = list(_BOXED.finditer(text))
    if not starts:
        return None
    depth, start = 1, starts[-1].end()
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]  # unclosed (truncated generation): keep what is there


def _segments(text: str) -> list[str]:
    """Answer segments in priority order: last answer line, last boxed, last ####."""
    lines = _ANSWER_LINE.findall(text)
    # "The final answer is $\boxed{7}$": the box is the precise span.
    found = [_last_boxed(lines[-1]) or lines[-1]] if lines else []
    if (boxed := _last_boxed(text)) is not None:
        found.append(boxed)
    if hashes := _HASHES.findall(text):
        found.append(hashes[-1])
    return [s for s in found if s.strip()]


def _first(text: str, parse: Callable[[str], str | None]) -> str | None:
    """First marker segment that parses; None means the caller should use its fallback."""
    for seg in _segments(text):
        if (value := parse(seg)) is not None:
            return value
    return None


# --- number -------------------------------------------------------------------

# Sign may be ASCII hyphen, unicode minus (U+2212) or en dash (U+2013). The lookbehind
# rejects digits glued to words ("COVID19", "x2y") and the "-" of ranges like "5-10".
_NUMBER = re.compile(
    r"(?<![\w.])(?P<neg>[-\u2212\u2013])?(?P<num>\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?"
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*([\d.]+)\s*\}")


def _clean_numeric(text: str) -> str:
    text = _FRAC.sub(r"\1/\2", text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # thousands separators
    text = re.sub(r"([-\u2212\u2013])\s*\\?[$€£]", r"\1", text)  # "-$5" keeps its sign
    return re.sub(r"\\?[$€£]|\\%|%", " ", text)  # currency / percent / LaTeX "$" delimiters


def _numbers(text: str) -> list[float]:
    values = []
    for m in _NUMBER.finditer(_clean_numeric(text)):
        value = float(m["num"])
        if m["den"]:
            if float(m["den"]) == 0:
                continue
            value /= float(m["den"])
        values.append(-value if m["neg"] else value)
    return values


def _fmt(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def _number_in_segment(seg: str) -> str | None:
    # GSM8K calculator tags "<<48/2=24>>" and asides like "8 (=2*4)" are working, not answers.
    core = re.sub(r"<<[^<>]*>>|\([^()]*\)", " ", seg)
    # "The answer is 12 apples * 3 = 36 apples" -> the result after the last "=".
    values = _numbers(core.rpartition("=")[2]) or _numbers(seg)
    return _fmt(values[0]) if values else None


def _extract_number(text: str, choices: Choices) -> str | None:
    found = _first(text, _number_in_segment)
    if found is None and (values := _numbers(text)):
        found = _fmt(values[-1])
    return found


def _compare_number(predicted: str, gold: str, choices: Choices) -> bool:
    gold_values = _numbers(gold)
    if not gold_values:
        return False
    return math.isclose(float(predicted), gold_values[0], rel_tol=1e-4, abs_tol=1e-6)


# --- multiple choice ------------------------------------------------------------

_STRIP = " \t\n.,;:!?\"'`*_()[]"


def _letters(choices: Choices) -> str:
    return "ABCDEFGHIJ"[: len(choices)] if choices else "ABCDE"


def _norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("*", "")).strip(_STRIP).lower()


def _choice_in_segment(seg: str, choices: Choices, loose: bool = True) -> str | None:
    letters = _letters(choices)
    bare = _norm_text(seg)
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper()
    # "(B) library", "B) library", "B. library", "option B" -- but not "a bank".
    lead = re.match(r"[\s*]*(?:option|choice)?\s*\(?([A-Ja-j])(?:\)|\.(?!\w)|:)", seg, re.I)
    if lead and lead.group(1).upper() in letters:
        return lead.group(1).upper()
    if not choices:
        return None
    options = [(_norm_text(c), letter) for c, letter in zip(choices, letters, strict=False)]
    for text, letter in options:  # exact equality first: "bank" must not become "river bank"
        if text and bare == text:
            return letter
    if loose:
        for text, letter in sorted(options, key=lambda o: -len(o[0])):
            if text and re.search(rf"(?<!\w){re.escape(text)}(?!\w)", bare):
                return letter
    return None


def _extract_choice(text: str, choices: Choices) -> str | None:
    found = _first(text, lambda seg: _choice_in_segment(seg, choices))
    if found is not None:
        return found
    letters = _letters(choices)
    marked = [m.upper() for m in re.findall(r"\(([A-Ja-j])\)", text) if m.upper() in letters]
    if marked:
        return marked[-1]
    # A bare "B" or "library" as the whole output; no containment, reasoning mentions many options.
    return _choice_in_segment(text, choices, loose=False)


def _compare_choice(predicted: str, gold: str, choices: Choices) -> bool:
    gold_letter = _choice_in_segment(gold, choices, loose=False)  # gold may be "B" or option text
    if gold_letter is None or predicted == gold_letter:
        return predicted == gold_letter
    # CommonsenseQA repeats option texts (C and E both "mississippi"); picking either
    # copy of the gold text is the same answer, so "The answer is mississippi." counts.
    letters = _letters(choices)
    texts = {letter: _norm_text(text) for letter, text in zip(letters, choices or [], strict=False)}
    return predicted in texts and texts[predicted] == texts[gold_letter]


# --- yes / no -------------------------------------------------------------------

_YESNO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_TRUTH = {"yes": "yes", "true": "yes", "y": "yes", "1": "yes", "1.0": "yes",
          "no": "no", "false": "no", "n": "no", "0": "no", "0.0": "no"}  # fmt: skip


def _yesno_in_segment(seg: str) -> str | None:
    m = _YESNO.search(seg)
    return _TRUTH[m.group(1).lower()] if m else None


def _extract_yesno(text: str, choices: Choices) -> str | None:
    found = _first(text, _yesno_in_segment)
    if found is not None:
        return found
    # A model that answers first ("No, because ...") states its verdict in the first word.
    words = text.split()
    if words and _YESNO.fullmatch(first := words[0].strip(_STRIP)):
        return _TRUTH[first.lower()]
    hits = _YESNO.findall(text)
    return _TRUTH[hits[-1].lower()] if hits else None


def _compare_yesno(predicted: str, gold: str, choices: Choices) -> bool:
    return predicted == _TRUTH.get(str(gold).strip(_STRIP).lower())


# --- free-form math ---------------------------------------------------------------

_DOLLARS = re.compile(r"\$\$?(.+?)\$\$?|\\\((.+?)\\\)", re.DOTALL)


def _norm_math(text: str) -> str:
    text = _last_boxed(text) or text
    text = text.strip().rstrip(".").strip().strip("$").strip()
    return re.sub(r"^\\\(|\\\)$", "", text).strip()


def _extract_math(text: str, choices: Choices) -> str | None:
    found = _first(text, lambda seg: _norm_math(seg) or None)
    if found is None:
        spans = _DOLLARS.findall(text)
        found = _norm_math(next(s for s in spans[-1] if s) if spans else text) or None
    return found


def _compare_math(predicted: str, gold: str, choices: Choices) -> bool:
    gold = _norm_math(gold)
    if re.sub(r"\s+", "", predicted) == re.sub(r"\s+", "", gold):
        return True  # fast path: skip sympy for identical strings
    from math_verify import parse, verify  # deferred: pulls in sympy

    # math_verify's timeouts use SIGALRM, which only works on the main thread.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_expr = parse(f"${gold}$", parsing_timeout=limit)
        pred_expr = parse(f"${predicted}$", parsing_timeout=limit)
        return bool(gold_expr and pred_expr and verify(gold_expr, pred_expr, timeout_seconds=limit))
    except Exception:  # a malformed expression is a wrong answer, not a crash
        return False


# --- registry and public API --------------------------------------------------------

GRADERS: dict[str, Grader] = {
    "number": Grader(_extract_number, _compare_number),
    "choice": Grader(_extract_choice, _compare_choice),
    "yesno": Grader(_extract_yesno, _compare_yesno),
    "math": Grader(_extract_math, _compare_math),
}


def _grader(answer_type: str) -> Grader:
    try:
        return GRADERS[answer_type]
    except KeyError:
        known = ", ".join(sorted(GRADERS))
        raise ValueError(f"unknown answer_type {answer_type!r}; known: {known}") from None


def extract_answer(text: str, answer_type: str, choices: list[str] | None = None) -> str | None:
    grader = _grader(answer_type)
    if not isinstance(text, str) or not text.strip():
        return None
    return grader.extract(text, choices)


def grade(output: str, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
    grader = _grader(answer_type)
    predicted = extract_answer(output, answer_type, choices)
    if predicted is None or gold is None:
        return Verdict(False, predicted)
    return Verdict(grader.compare(predicted, str(gold), choices), predicted)
