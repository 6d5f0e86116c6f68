"""undo: UNDO (UNderstanding Distillation as Optimization) distillation of teacher reasoning."""

__version__ = "0.1.0"
