"""Fixtures shared across the mirrored test folders."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random chat model of tests/tiny_model.py as a student folder: runs that test the
    loop's mechanics (stages, resume, budget, files) train and score it in a second where the
    real SmolLM2 takes minutes. It answers nothing right, so every train question goes to refine."""
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny_student"))
