"""A Task = loader + question formatting + answer type + grader (lm-eval-harness style).

Tasks are registered data: adding a dataset never touches the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from undo.grading import Verdict, answer_type, grade

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# What the student is asked. The fixed answer line is what every grader prefers,
# so teacher rationales and student attempts end the same way.
INSTRUCTION = "Think step by step, then finish with the line 'The answer is X.'"


@dataclass
class Record:
    id: str
    question: str
    answer: str
    answer_type: str
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self) -> str:
        """The question as shown to teacher and student, options included."""
        text = self.question.strip()
        if self.choices:
            opts = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(self.choices))
            text += f"\nAnswer Choices: {opts}"
        return text

    def gold_display(self) -> str:
        """The gold answer as a human writes it: '(B) library' for choices, 'Yes' for yes/no."""
        return answer_type(self.answer_type).display(self.answer, self.choices)

    def grade(self, output: str) -> Verdict:
        return grade(output, self.answer, self.answer_type, self.choices)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(
            id=str(d["id"]),
            question=d["question"],
            answer=str(d["answer"]),
            answer_type=d["answer_type"],
            choices=d.get("choices"),
            meta=d.get("meta") or {},
        )


def student_messages(record: Record) -> list[dict[str, str]]:
    """The chat a student is trained on and evaluated with (the same, by design)."""
    return [{"role": "user", "content": f"{record.prompt()}\n{INSTRUCTION}"}]


@dataclass
class Task:
    name: str
    answer_type: str
    # load(source, part) -> records; part is "train" (the pool for train+val) or "test"
    load: Callable[[str | None, str], list[Record]]
    # procedural tasks make every split themselves: (run seed, {split: size}) -> {split: records}
    generate: Callable[[int, dict[str, int | None]], dict[str, list[Record]]] | None = None


TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        TASKS[name] = factory
        return factory

    return deco
