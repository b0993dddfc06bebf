"""Fixtures shared across test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def embedded_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded GGUF converted to a transformers dir, once per test session (the conversion takes ~20-50 s)."""
    from recgpt_cli.llm.convert import convert_gguf_to_hf

    return convert_gguf_to_hf(tmp_path_factory.mktemp("embedded_hf") / "hf")
