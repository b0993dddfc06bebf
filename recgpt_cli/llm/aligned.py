"""Which weights `--model` names for the llama-cpp backend, and recgpt's packaged alignment adapter.

The raw SmolLM2-135M writes junk interests and tags (bench/README.md: HR@30 0, interest F1 0.06), so by default the
interest and tag stages serve it with `recgpt_cli/llm/aligned/adapter.gguf`: a LoRA adapter from `recgpt align sft`
on logs samples of two synthetic shops that are not sample_data (the generator under other seeds, ids prefixed;
`bench/build_aligned.py` rebuilds it), so no user any dataset scores was trained on. Explanations (LLM_RE, a model
of its own as in §2.4.1) are served with `recgpt_cli/llm/aligned/explain/adapter.gguf`: a LoRA adapter trained on
the raw model's own answers that passed explain's safety rules on two of those shops (one self-training round;
`build_aligned.py --explanations`); it fills 88-94% of held-out explanation pairs where the raw model fills 5-24%
(bench/README.md, twenty-first session). The judge keeps the raw model. `--model base` always means the raw model.

An `align sft` dir holding `adapter.gguf` but no merged `model.gguf` is served the same way: its adapter on top of
the GGUF it was trained from (`adapter_base` in its manifest), merged once into the cache dir
(`align.gguf_export.merge_lora_gguf`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recgpt_cli.errors import BadInput

BASE_MODEL = "base"  # `--model base`: the raw embedded model, even for tasks the packaged adapter serves
PACKAGED_DIR = Path(__file__).resolve().parent / "aligned"
EXPLAIN_PACKAGED_DIR = PACKAGED_DIR / "explain"
ADAPTER = "adapter.gguf"
EMBEDDED = "embedded"  # manifest value of `adapter_base` for the embedded model (its path differs per install)


def default_model(task: str | None) -> str | None:
    """The `--model` a llama-cpp stage gets when none is given: the packaged adapter aligned on that task, else
    None (the raw embedded model)."""
    for d in (PACKAGED_DIR, EXPLAIN_PACKAGED_DIR):
        if task and task in _manifest(d).get("tasks", []) and (d / ADAPTER).is_file():
            return str(d)
    return None


def adapter_base(model_dir: Path) -> Path:
    """The GGUF the adapter in `model_dir` was trained on (its weights are what the adapter is a delta of)."""
    from recgpt_cli.llm.embedded import embedded_model_path
    from recgpt_cli.llm.fingerprint import file_sha256

    manifest = _manifest(model_dir)
    base = manifest.get("adapter_base")
    if not base:
        raise BadInput(f"{model_dir}: its manifest names no adapter_base (the GGUF the adapter was trained on)",
                       f"run `recgpt align export {model_dir}` to merge it into a model.gguf")
    path = embedded_model_path() if base == EMBEDDED else Path(str(base))
    want = manifest.get("adapter_base_sha256")
    if not path.is_file() or (want and file_sha256(path) != want):
        raise BadInput(f"{model_dir}: its adapter was trained on {base} (sha256 {str(want)[:16]}), which "
                       f"{'is not here' if not path.is_file() else 'differs from ' + str(path)}",
                       "install the base model it was trained on, or retrain with `recgpt align sft`")
    return path


def _manifest(model_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((model_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
