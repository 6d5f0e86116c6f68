"""Step check: the arithmetic a rationale writes out must hold, not only its final answer.

Answer verification alone lets through a chain such as

    7 + 7 - 5 = 14
    14 - 5 = 8
    The answer is 9.

the right answer reached through false steps. A small teacher writes many of these
when it refines (it copies the student's wrong arithmetic, then states the gold it
was shown): 36 of the 138 verified refinements in the offline pair's 3-seed comparison
did (bench/steps.py). Trained on, they teach the student to write inconsistent chains.

Only plain calculations are checked: numbers joined by + - * / x × ÷ on one side of
"=" and a single number on the other (commas and $ allowed). An equation solved line by
line is read the same way: "z = 28 - 9" followed by "z = 27" (the same left side, then a
single number) claims "28 - 9 = 27", the slip a student makes solving for z. Anything else
(parentheses, units, percentages, variables, an expression on the right, a clause
that mixes words into the calculation) is not a calculation this check can read and
passes untouched, so it never rejects what it cannot evaluate. On GSM8K's 7,473 gold
solutions it flags 20 (0.27 %), most of them real slips in the gold text (bench/steps.py).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_NUM = r"[$€£]?(?:\d{1,3}(?:,\d{3})+|0|[1-9]\d*)(?:\.\d+)?"  # "0130" is a clock time, not 130
_OP = r"[ \t]*(?:[-+*/×÷−·]|(?<=[\d \t])x(?=[ \t\d]))[ \t]*"
# not preceded by anything that would make the left side part of a larger expression, nor
# by "digit space" (a mixed number "1 1/2" or a thousands group "80 000")
_START = r"(?<![\w.,:()+*/×÷^%$€£−-])(?<!\d )"
_CALC = re.compile(
    rf"{_START}(?P<lhs>[-−]?{_NUM}(?:{_OP}{_NUM})+)[ \t]*=[ \t]*(?P<rhs>[-−]?{_NUM})"
    # one line; the right side must end there: "= 3 + 4" or "= 35%" is not a single value
    r"(?![\w%]|[.,]\d|[ \t]*[-+*/×÷^−=·]|[ \t]+x[ \t]|[ \t]\d{3}\b)"
)
# "18*k = 344 - 2" on one line and "18*k = 340" on the next: the two right sides are equal.
# The left side must hold a variable; the right sides must be numbers only. Not an
# inequality ("x >= 2250 - 2146"): only equalities are read.
_CHAIN = re.compile(
    rf"^[ \t]*(?P<side>[^=\n]*?[^\W\d][^=<>!\n]*?)[ \t]*=[ \t]*(?P<lhs>[-−]?{_NUM}(?:{_OP}{_NUM})+)[ \t]*\n"
    rf"[ \t]*(?P=side)[ \t]*=[ \t]*(?P<rhs>[-−]?{_NUM})[ \t]*\.?[ \t]*$",
    re.MULTILINE,
)
# an operator earlier in the same clause: "60 students x 2/3 = 40" is not "2/3 = 40"
_CLAUSE_BREAK = re.compile(r".*(?:[\n,;:=]|\.\s)", re.DOTALL)
_OPERATOR = re.compile(r"[+*/×÷−·]|\s[-x]\s")
_FRACTION_DIVISOR = re.compile(r"/[ \t]*[\d.]+[ \t]*/")
_TOKEN = re.compile(rf"({_NUM})|([-+*/×÷−·x])")


def _value(num: str) -> Fraction:
    return Fraction(num.lstrip("$€£").replace(",", ""))


def _evaluate(lhs: str) -> Fraction | None:
    """The left side's value with * and / before + and -; None on division by zero."""
    terms: list[Fraction] = []  # additive terms, each already multiplied out
    sign, op = 1, "+"
    lhs = lhs.strip()
    if lhs[0] in "-−":
        sign, lhs = -1, lhs[1:]
    for num, operator in _TOKEN.findall(lhs):
        if operator:
            op = operator
            continue
        v = _value(num)
        if op in "+-−":
            terms.append(v * sign if not terms else (v if op == "+" else -v))
        elif op in "*×·x":
            terms[-1] *= v
        elif v == 0:
            return None
        else:
            terms[-1] /= v
    return sum(terms, Fraction(0))


def _holds(value: Fraction, rhs: str, divides: bool) -> bool:
    written = _value(rhs.replace("−", "-").lstrip("-")) * (-1 if rhs[0] in "-−" else 1)
    places = len(rhs.partition(".")[2])
    if divides and places == 0:  # whole units from a division: floor or ceiling (8 / 3 = 2 boxes)
        return math.floor(value) <= written <= math.ceil(value)  # 112 / 7 = 15 does not hold
    # a written result is read to its own precision: 10 / 3 = 3.33 holds
    return abs(value - written) <= Fraction(1, 2 * 10**places)


def _calculations(text: str) -> list[re.Match[str]]:
    """The plain calculations of `text` this check can read, in order."""
    out = []
    for m in _CALC.finditer(text):
        clause = _CLAUSE_BREAK.sub("", text[: m.start()], count=1)
        if _OPERATOR.search(clause) or _FRACTION_DIVISOR.search(m["lhs"]):
            continue  # the tail of a longer calculation, or "50 / 1/2" (÷ a half, or not?)
        out.append(m)
    return out


def calculation_matches(text: str) -> list[re.Match[str]]:
    """The plain calculations of `text` as regex matches (groups `lhs`, `rhs`; `start()`,
    `end()`), in order: for code that rewrites a calculation in place."""
    return _calculations(text)


def _claims(text: str) -> list[tuple[str, str, str]]:
    """Every calculation `text` claims, in order, as (left side, result, as written): the
    plain ones, and those of an equation solved line by line ("z = 28 - 9" then "z = 27"
    claims "28 - 9 = 27", written as that)."""
    found = [(m.start(), m["lhs"], m["rhs"], m.group(0)) for m in _calculations(text)]
    for m in _CHAIN.finditer(text):
        lhs = " ".join(m["lhs"].split())
        found.append((m.start(), lhs, m["rhs"], f"{lhs} = {m['rhs']}"))
    return [(lhs, rhs, written) for _, lhs, rhs, written in sorted(found, key=lambda f: f[0])]


def value_of(lhs: str) -> Fraction | None:
    """The value of a calculation's left side ("57 + 87"); None on division by zero."""
    return _evaluate(lhs)


def _claim_holds(lhs: str, rhs: str) -> bool:
    """A calculation's written result holds for its left side (division by zero never does)."""
    value = _evaluate(lhs)
    return value is not None and _holds(value, rhs, divides=bool(re.search("[/÷]", lhs)))


def first_false_step(text: str) -> str | None:
    """The first calculation in `text` that does not hold, as written (an equation's step as
    the calculation it claims); None if all hold."""
    for lhs, rhs, written in _claims(text):
        if not _claim_holds(lhs, rhs):
            return written
    return None


def calculations(text: str) -> list[tuple[str, str]]:
    """(calculation as written, its result) for each calculation, repeats dropped: a chain
    of thought cut down to its arithmetic."""
    out: list[tuple[str, str]] = []
    for _, rhs, written in _claims(text):
        calc = " ".join(written.split())
        if calc not in (c for c, _ in out):
            out.append((calc, rhs))
    return out


def _plain(lhs: str) -> str:
    return re.sub(r"\s+", "", lhs).replace("−", "-").replace("×", "*").replace("x", "*")


def corrects(false_step: str, text: str) -> bool:
    """True when `text` writes the calculation of `false_step` (the same left side) with a
    result that holds, whole or in smaller steps: the student's "14 - 5 = 8" answered by a
    line "14 - 5 = 9", or by "14 - 4 = 10" then a line ending "= 9" (`smaller_steps`)."""
    wrong = _CALC.search(false_step)
    if wrong is None:
        return False
    lhs = _plain(wrong["lhs"])
    # every match, not `_claims`: a right result counts here even inside a longer clause
    written = [(m["lhs"], m["rhs"]) for m in _CALC.finditer(text)]
    written += [(m["lhs"], m["rhs"]) for m in _CHAIN.finditer(text)]
    if any(_plain(other) == lhs and _claim_holds(other, rhs) for other, rhs in written):
        return True
    split = split_calculation(false_step)
    if split and len(split) > 1:
        lines = [" ".join(line.split()) for line in text.splitlines()]
        if split[0] in lines:
            after = lines[lines.index(split[0]) + 1:]
            return any(line.endswith(split[-1].rsplit("=", 1)[1]) for line in after[: len(split) - 1])
    return False


def _magnitudes(text: str) -> set[Fraction]:
    """The absolute values of the numbers written in `text` (a sign is read apart)."""
    return {_value(m.group(0)) for m in re.finditer(_NUM, text)}


def unrelated_step(question: str, text: str) -> str | None:
    """The first calculation of `text` that neither builds on the question or an earlier line
    (no operand from them) nor feeds what follows (its result never written again), as
    written; None when there is none. A teacher's own worked example can open with a stray
    true line ("67 - 94 = -27" before solving "z + 9 = 28"): it verifies, and every prompt
    that shows the example teaches it. Lenient on purpose: a unit constant ("60 * 3 = 180",
    3 from the question) passes, and so does "23 x 10 + 23 x 8 = 230 + 184 = 414", whose
    operands are unwritten products but whose result is the answer."""
    known = _magnitudes(question)
    start = 0
    for line in text.splitlines(keepends=True):
        for m in _calculations(line):
            builds = _magnitudes(m["lhs"]) & (known | _magnitudes(line[: m.start()]))
            if not builds and _value(m["rhs"].lstrip("-−")) not in _magnitudes(text[start + m.end():]):
                return " ".join(m.group(0).split())
        known |= _magnitudes(line)
        start += len(line)
    return None


# --- smaller steps: the arithmetic of one calculation, split where a student slips -------


def _whole(num: str) -> int | None:
    """A number token (no sign: `split_calculation` reads the sign apart) as an int, if whole."""
    v = _value(num)
    return int(v) if v.denominator == 1 else None


def smaller_steps(a: int, op: str, b: int) -> list[str]:
    """`a op b` as two or three calculations that each move one digit, every one of which
    holds: "57 + 87" -> "57 + 80 = 137", "137 + 7 = 144"; "14 - 5" -> "14 - 4 = 10",
    "10 - 1 = 9"; "23 * 14" -> "23 * 10 = 230", "23 * 4 = 92", "230 + 92 = 322". A
    calculation with nothing to split comes back as one line."""
    one = {"+": a + b, "-": a - b, "*": a * b}
    if op not in one or b < 0:
        return [f"{a} {op} {b} = {one[op]}"] if op in one else []
    tens, ones = b - b % 10, b % 10
    if op == "*":
        if tens and ones:
            return [f"{a} * {tens} = {a * tens}", f"{a} * {ones} = {a * ones}",
                    f"{a * tens} + {a * ones} = {a * b}"]
        return [f"{a} * {b} = {a * b}"]
    sign = 1 if op == "+" else -1
    if tens and ones:
        first, second = tens, ones
    elif b < 10 and a >= 0 and op == "+" and a % 10 + b > 10:
        first, second = 10 - a % 10, b - (10 - a % 10)  # up to the next ten, then the rest
    elif b < 10 and a >= 0 and op == "-" and 0 < a % 10 < b:
        first, second = a % 10, b - a % 10  # down to the ten, then the rest
    else:
        return [f"{a} {op} {b} = {one[op]}"]
    mid = a + sign * first
    return [f"{a} {op} {first} = {mid}", f"{mid} {op} {second} = {one[op]}"]


def split_calculation(calc: str) -> list[str] | None:
    """`smaller_steps` of a written two-number calculation ("57 + 87 = 140"), the result
    recomputed; None when it is not one this can split (more terms, fractions, division)."""
    m = _CALC.search(calc)
    if m is None:
        return None
    lhs = m["lhs"].strip()
    neg = lhs[0] in "-−"
    parts = _TOKEN.findall(lhs[1:] if neg else lhs)
    if len(parts) != 3 or not parts[0][0] or not parts[1][1] or not parts[2][0]:
        return None
    a, b = _whole(parts[0][0]), _whole(parts[2][0])
    op = {"−": "-", "×": "*", "x": "*", "·": "*"}.get(parts[1][1], parts[1][1])
    if a is None or b is None or op not in "+-*":
        return None
    return smaller_steps(-a if neg else a, op, b)
