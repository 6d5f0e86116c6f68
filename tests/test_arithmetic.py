"""The step check: written calculations must hold; what it cannot read passes untouched."""

from __future__ import annotations

import pytest

from undo.arithmetic import first_false_step, unrelated_step

FALSE = [
    # a refinement by the offline teacher: right answer, false chain (the case that motivated it)
    ("7 + 7 - 5 = 14\n14 - 5 = 8\nThe answer is 9.", "7 + 7 - 5 = 14"),
    ("42 + 15 = 19", "42 + 15 = 19"),
    ("-18 + 41 = 19", "-18 + 41 = 19"),
    ("3 + 4 * 2 = 14", "3 + 4 * 2 = 14"),  # precedence: 11
    ("2 x 3 = 5", "2 x 3 = 5"),
    ("1,000 + 2,000 = 4,000", "1,000 + 2,000 = 4,000"),
    ("10 / 3 = 3.4", "10 / 3 = 3.4"),
    ("5 + 3 = 8.5", "5 + 3 = 8.5"),
    ("He has 5 + 3 = 8 apples, then 8 - 2 = 7.", "8 - 2 = 7"),
    ("5 / 0 = 1", "5 / 0 = 1"),
    ("123456789 + 1 = 123456791", "123456789 + 1 = 123456791"),  # exact, however large
    ("$4200+$3000 = $8600", "$4200+$3000 = $8600"),
    # an equation solved line by line: the same left side, an expression, then a number
    ("z + 9 = 28\nz = 28 - 9\nz = 27\nThe answer is 27.", "28 - 9 = 27"),
    ("18*k + 2 = 344\n18*k = 344 - 2\n18*k = 340\nk = 340 ÷ 18\nk = 2", "344 - 2 = 340"),
    ("o = 1632 ÷ 102\no = 11.", "1632 ÷ 102 = 11"),
    ("s = 112 ÷ 7\ns = 15", "112 ÷ 7 = 15"),  # an exact division: no rounding to excuse it
    ("8 / 3 = 4 boxes", "8 / 3 = 4"),
    ("Total cost = 3 * 12\nTotal cost = 38\nThe answer is 38.", "3 * 12 = 38"),
]

HOLDS_OR_UNREADABLE = [
    "66 - 16 = 50\n50 + 15 = 65\nThe answer is 65.",
    "18 - 40 = -22\n-22 + 41 = 19",  # a line may start with the previous line's negative result
    "10 / 3 = 3.33",  # read to the written precision
    "8 / 3 = 2 boxes",  # whole units from a division: floor or ceiling
    "$5 + $3 = $8.",
    "12 ÷ 4 = 3",
    "3 − 1 = 2",
    "1/2 + 1/4 = 0.75",
    "0.1 + 0.2 = 0.3",
    "123456789 * 3 = 370370367",
    # not a calculation this check can read
    "2 + 3 = 1 + 4",  # an expression on the right
    "(3 + 4) * 2 = 14",
    "2 * (3 + 4) = 14",
    "20% * 50 = 10",
    "2x + 3 = 7",
    "There are 60 students x 2/3 = 40 students",  # words inside the calculation
    "8 x 1 1/2 = 12 rolls",  # a mixed number
    "$80 000 x 20/100 = $16 000",  # a space as thousands separator
    "50/ 1/2 = 100 halves",  # dividing by a fraction: ambiguous as written
    "100/5 = 5A/5",  # algebra
    "0900-0130 = 0730 hours",  # clock times
    "6:00+48=6:48 PM",
    "5 +\n3 = 9",  # one line only
    "35 = 5 * 7",
    # equations solved line by line that hold, or that this check cannot read
    "z = 28 - 9\nz = 19\nThe answer is 19.",
    "m = 260 / 26\nm = 10",
    "x = 5 + 3\ny = 9",  # another left side
    "x = 5 + 3\nx = 9 apples",  # words after the result
    "x = 5 + 3\n\nx = 9",  # not the next line
    "8 = 5 + 3\n8 = 9",  # no variable: not an equation being solved
    "q = -108 ÷ -6\nq = 17",  # a signed number after the operator
    "Thus, x >= 2250 - 2146\nThus, x >= 94",  # an inequality
]


@pytest.mark.parametrize(("text", "step"), FALSE)
def test_false_calculations_are_found(text, step):
    assert first_false_step(text) == step


@pytest.mark.parametrize("text", HOLDS_OR_UNREADABLE)
def test_true_or_unreadable_calculations_pass(text):
    assert first_false_step(text) is None


def test_a_refinement_that_writes_the_false_step_right():
    from undo.arithmetic import corrects

    assert corrects("14 - 5 = 8", "7 + 7 = 14\n14 - 5 = 9\nThe answer is 9.")
    assert corrects("14 - 5 = 8", "14-5 = 9")
    assert not corrects("14 - 5 = 8", "7 + 7 = 14\n14 - 5 = 8\nThe answer is 9.")  # copied the slip
    assert not corrects("14 - 5 = 8", "7 + 2 = 9\nThe answer is 9.")  # another way, not that step
    assert not corrects("no calculation here", "14 - 5 = 9")
    # in smaller steps (refine worked examples teach this): the split, then the right result
    assert corrects("43 + 14 = 67", "43 + 10 = 53\n53 + 4 = 57\n57 - 10 = 47\nThe answer is 47.")
    assert not corrects("43 + 14 = 67", "43 + 10 = 53\n53 + 4 = 58\nThe answer is 48.")
    assert not corrects("43 + 14 = 67", "43 + 10 = 53\n53 - 10 = 43\n43 + 4 = 57")  # not the next step
    # an equation's step: the student's "z = 28 - 9 / z = 27" answered line by line
    assert corrects("28 - 9 = 27", "z + 9 = 28\nz = 28 - 9\nz = 19\nThe answer is 19.")
    assert not corrects("28 - 9 = 27", "z + 9 = 28\nz = 28 - 9\nz = 27\nThe answer is 19.")


def test_calculations_cut_a_chain_of_thought_to_its_arithmetic():
    from undo.arithmetic import calculations

    text = ("First, 3 + 49 = 52 dollars. Again 3 + 49 = 52. Then 52  -  6 = 46 and 2 * 3 + 1 = 7.\n"
            "The answer is 46.")
    assert calculations(text) == [("3 + 49 = 52", "52"), ("52 - 6 = 46", "46"), ("2 * 3 + 1 = 7", "7")]
    # in the order written, an equation's steps as the calculations they claim
    solved = "7*s - 16 = 96\n7*s = 96 + 16\n7*s = 112\ns = 112 / 7\ns = 16\n5 + 1 = 6"
    assert calculations(solved) == [("96 + 16 = 112", "112"), ("112 / 7 = 16", "16"), ("5 + 1 = 6", "6")]


@pytest.mark.parametrize(("question", "text", "stray"), [
    ("Solve for z: z + 9 = 28", "67 - 94 = -27\nz + 9 = 28\nz = 28 - 9\nz = 19", "67 - 94 = -27"),
    ("Solve for z: z + 9 = 28", "z = 28 - 9\nz = 19\nThe answer is 19.", None),
    ("24 + 60 + 28 =", "24 + 60 = 84\n84 + 28 = 112\nThe answer is 112.", None),  # builds on line 1
    ("Tom works 3 hours. How many minutes?", "60 * 3 = 180\nThe answer is 180.", None),  # one known operand
    ("Ann has 5 pens and gives 2 away.", "5 - 2 = 3\n7 * 8 = 56\nThe answer is 3.", "7 * 8 = 56"),
    ("Ann has $1,200 and spends half.", "$1,200 / 2 = $600\nThe answer is 600.", None),
    # operands that are unwritten products, but the result is the answer
    ("What is 23 * 18?", "23 × 18 = 23 × (10 + 8) = 23 × 10 + 23 × 8 = 230 + 184 = 414\nThe answer is 414.",
     None),
])
def test_a_calculation_unrelated_to_the_question_is_found(question: str, text: str, stray: str | None) -> None:
    assert unrelated_step(question, text) == stray
