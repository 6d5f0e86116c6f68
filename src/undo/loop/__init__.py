"""The UNDO loop (DESIGN.md): `run` drives the iterations and resumes them; `feedback` turns
a student's wrong answers into refine requests; `mixing` builds each iteration's training
set; `plan` is the dry run and the checks before any model loads. (The check of a
rationale's calculations, used by the teacher and the student too, is `undo.arithmetic`.)"""

from typing import Any

__all__ = ["UndoRun"]


def __getattr__(name: str) -> Any:
    # loaded on first use: `import undo.loop.mixing` does not pull in the whole loop
    if name == "UndoRun":
        from undo.loop.run import UndoRun

        return UndoRun
    raise AttributeError(f"module 'undo.loop' has no attribute {name!r}")
