"""Answer types: extraction, comparison, gold parsing and display, one record per type.

The same rules serve teacher verification, student evaluation and the CLI, so a
rationale that passes the teacher filter is graded identically when a student
writes it. Every extractor first looks for an explicit answer marker (last
"The answer is X" line, then the last \\boxed{X}, then the GSM8K "#### X") and
only falls back to scanning the whole text when no marker yields an answer.

Everything that depends on the answer type (the prompt's answer format, how a data
file's gold is normalised, how gold is written on the answer line) lives in one
`AnswerType` record, so a new type is one `register_answer_type` call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from undo.errors import UserError


@dataclass(frozen=True)
class Verdict:
    correct: bool
    predicted: str | None  # the normalised extracted answer; None = nothing parsable


Choices = list[str] | None


def answer_line(answer: str) -> str:
    return f"The answer is {answer}."


# A complete answer line: its closing period followed by whitespace, or a newline
# after "The answer is ...". A period at the very end of the text is not enough:
# "The answer is 3." may still become "The answer is 3.5.".
ANSWER_DONE = re.compile(r"[Tt]he answer is (?:[^\n]*?\.(?=\s)|[^\n]*?(?=\n))")


def answer_line_end(text: str) -> int | None:
    """Where a reply that has written its answer line ends (the stop rule the student and an
    in-process teacher decode with: nothing after the answer is graded), else None."""
    m = ANSWER_DONE.search(text)
    return m.end() if m else None


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
# A ratio gold ("1/3") is an exact value; a prediction can only write it to finitely many digits.
_RATIO_REL_TOL = Fraction(1, 10**9)
# Decimal golds written with more digits than anyone computes (SVAMP's 0.3333333333333333)
# are honoured to about 12 significant digits, not to their last float-repr digit.
_DECIMAL_REL_TOL = Fraction(1, 10**12)


@dataclass(frozen=True)
class _Number:
    value: Fraction  # exact, so large integers never lose digits to float rounding
    places: int | None  # decimal places as written ("2.50" -> 2); None for a ratio such as "1/3"


def _clean_numeric(text: str) -> str:
    text = _FRAC.sub(r"\1/\2", text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # thousands separators
    text = re.sub(r"([-\u2212\u2013])\s*\\?[$€£]", r"\1", text)  # "-$5" keeps its sign
    return re.sub(r"\\?[$€£]|\\%|%", " ", text)  # currency / percent / LaTeX "$" delimiters


def _numbers(text: str) -> list[_Number]:
    found = []
    for m in _NUMBER.finditer(_clean_numeric(text)):
        value, places = Fraction(m["num"]), len(m["num"].partition(".")[2])
        if m["den"]:
            if (den := Fraction(m["den"])) == 0:
                continue
            value, places = value / den, None
        found.append(_Number(-value if m["neg"] else value, places))
    return found


def _fmt(value: Fraction) -> str:
    """Integers exactly; other values to 15 significant digits, in plain (not E) notation."""
    if value.denominator == 1:
        return str(value.numerator)
    with localcontext() as ctx:
        ctx.prec = 15
        decimal = (Decimal(value.numerator) / Decimal(value.denominator)).normalize()
    return f"{decimal:f}"


def _number_in_segment(seg: str) -> str | None:
    # GSM8K calculator tags "<<48/2=24>>" and asides like "8 (=2*4)" are working, not answers.
    core = re.sub(r"<<[^<>]*>>|\([^()]*\)", " ", seg)
    # "The answer is 12 apples * 3 = 36 apples" -> the result after the last "=".
    found = _numbers(core.rpartition("=")[2]) or _numbers(seg)
    return _fmt(found[0].value) if found else None


def _extract_number(text: str, choices: Choices) -> str | None:
    found = _first(text, _number_in_segment)
    if found is None and (values := _numbers(text)):
        found = _fmt(values[-1].value)
    return found


def _compare_number(predicted: str, gold: str, choices: Choices) -> bool:
    """Exact for integer golds (a relative tolerance once passed 106501 for 106491); a decimal
    gold to half a unit in its last written place; a ratio gold to a 1e-9 relative error."""
    golds = _numbers(gold)
    if not golds:
        return False
    try:
        pred = Fraction(predicted)
    except (ValueError, ZeroDivisionError):
        return False
    target = golds[0]
    if target.value.denominator == 1:  # "51", "51.0", "1,080", "8/2"
        return pred == target.value
    if target.places is None:
        return abs(pred - target.value) <= _RATIO_REL_TOL * abs(target.value)
    half_unit = Fraction(1, 2 * 10**target.places)
    return abs(pred - target.value) < max(half_unit, _DECIMAL_REL_TOL * abs(target.value))


def format_number(value: Any) -> str:
    """A dataset's numeric gold as plain text: 51.0 -> "51", "1,080" -> "1080", 1e-05 -> "0.00001"."""
    text = str(value).replace(",", "").strip()
    if re.fullmatch(r"[-+]?\d+", text):
        return str(int(text))  # exact: float() would round integers past 2**53
    try:
        x = float(text)
    except ValueError:
        return text  # "1/3", "$5": left for the comparison's own number parsing
    if x.is_integer():
        return str(int(x))
    return f"{Decimal(repr(x)):f}"  # repr is the shortest exact text; :f avoids "1e-05"


def _parse_number_gold(raw: Any, choices: Choices, where: str) -> str:
    text = format_number(raw)
    if isinstance(raw, bool) or not _numbers(text):
        raise UserError(f"{where}: answer {raw!r} is not a number")
    return text


def _display_plain(gold: str, choices: Choices) -> str:
    return gold


# --- multiple choice ------------------------------------------------------------

_STRIP = " \t\n.,;:!?\"'`*_()[]"
# The option letters the extractor recognises ("(A)".."(J)"); more options cannot be graded.
_CHOICE_LETTERS = "ABCDEFGHIJ"


def _letters(choices: Choices) -> str:
    return _CHOICE_LETTERS[: len(choices)] if choices else "ABCDE"


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


def _parse_choice_gold(raw: Any, choices: Choices, where: str) -> str:
    """A letter ("B", "(b)"), a 0-based index, or an option's text -> the option's letter."""
    if choices is None:
        raise UserError("task.fields.choices is required when task.answer_type is 'choice'")
    if len(choices) > len(_CHOICE_LETTERS):
        raise UserError(f"{where}: {len(choices)} choices; at most {len(_CHOICE_LETTERS)} can be graded")
    letters = _letters(choices)
    text = str(raw).strip().strip("()").strip()
    if len(text) == 1 and text.upper() in letters:
        return text.upper()
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(choices):
        return letters[raw]
    lowered = [c.strip().lower() for c in choices]
    if text.lower() in lowered:
        return letters[lowered.index(text.lower())]
    raise UserError(f"{where}: answer {raw!r} is neither a choice letter nor an option's text")


def _display_choice(gold: str, choices: Choices) -> str:
    """'(B) library': the letter alone would teach the student to drop the option text."""
    letters = _letters(choices)
    if choices and len(gold) == 1 and gold in letters:
        return f"({gold}) {choices[letters.index(gold)]}"
    return gold


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


def parse_yesno(value: Any, where: str) -> str:
    """A dataset's yes/no gold (bool, "Yes", "true", 1, ...) -> "yes" | "no"."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    verdict = _TRUTH.get(str(value).strip().lower().rstrip("."))
    if verdict is None:
        raise UserError(f"{where}: answer {value!r} is not yes/no")
    return verdict


def _display_yesno(gold: str, choices: Choices) -> str:
    return gold.capitalize()  # "The answer is Yes." reads as a sentence


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


def _parse_math_gold(raw: Any, choices: Choices, where: str) -> str:
    text = str(raw).strip()
    if not text:
        raise UserError(f"{where}: empty answer")
    return text


# --- registry and public API --------------------------------------------------------


@dataclass(frozen=True)
class AnswerType:
    """Everything that depends on the kind of answer; registering one is all a new type needs."""

    name: str
    # model output -> normalised answer, None when nothing parses
    extract: Callable[[str, Choices], str | None]
    # (normalised prediction, gold, choices) -> correct
    compare: Callable[[str, str, Choices], bool]
    # what X should be in the prompts' "The answer is X."
    answer_format: str
    # a data file's raw gold value (+ choices, + `where` for the error) -> the normalised gold;
    # raises UserError naming `where` when the value does not fit the type
    parse_gold: Callable[[Any, Choices, str], str]
    # the gold as written on the answer line: "(B) library", "Yes", "72"
    display: Callable[[str, Choices], str]
    letters: str | None = None  # the option letters, for types that have options


ANSWER_TYPES: dict[str, AnswerType] = {}


def register_answer_type(t: AnswerType) -> AnswerType:
    ANSWER_TYPES[t.name] = t
    return t


def answer_type(name: str) -> AnswerType:
    try:
        return ANSWER_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(ANSWER_TYPES))
        raise ValueError(f"unknown answer_type {name!r}; known: {known}") from None


register_answer_type(AnswerType(
    "number", _extract_number, _compare_number, "the final number only", _parse_number_gold, _display_plain,
))
register_answer_type(AnswerType(
    "choice", _extract_choice, _compare_choice, "the letter of the correct choice", _parse_choice_gold,
    _display_choice, letters=_CHOICE_LETTERS,
))
register_answer_type(AnswerType(
    "yesno", _extract_yesno, _compare_yesno, "Yes or No",
    lambda raw, choices, where: parse_yesno(raw, where), _display_yesno,
))
register_answer_type(AnswerType(
    "math", _extract_math, _compare_math, "the final expression in simplest form", _parse_math_gold,
    _display_plain,
))


# grade() and extract_answer() keep their public `answer_type` parameter, which shadows the function.
_answer_type = answer_type


def extract_answer(text: str, answer_type: str, choices: list[str] | None = None) -> str | None:
    kind = _answer_type(answer_type)
    if not isinstance(text, str) or not text.strip():
        return None
    return kind.extract(text, choices)


def grade(output: str, gold: str, answer_type: str, choices: list[str] | None = None) -> Verdict:
    kind = _answer_type(answer_type)
    predicted = extract_answer(output, answer_type, choices)
    if predicted is None or gold is None:
        return Verdict(False, predicted)
    return Verdict(kind.compare(predicted, str(gold), choices), predicted)
