"""Convert a GGUF (default: the embedded SmolLM2-135M) to a transformers safetensors directory, once.

The `hf` backend and fine-tuning (alignment issue) need real torch weights; transformers dequantises the GGUF
on load (needs the `gguf` package). Usage: `python -m recgpt_cli.llm.convert OUT_DIR [--gguf FILE]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recgpt_cli.errors import RecgptError
from recgpt_cli.llm.embedded import embedded_model_path


def convert_gguf_to_hf(out_dir: Path | str, gguf: Path | str | None = None) -> Path:
    """Write config, tokenizer (with the GGUF's chat template) and float32 safetensors to `out_dir`.
    Skips the work when `out_dir` already holds a converted model."""
    out = Path(out_dir)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    src = Path(gguf) if gguf else embedded_model_path()
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError as exc:
        raise RecgptError(f"converting needs torch + transformers: {exc}") from exc
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        config = AutoConfig.from_pretrained(str(src.parent), gguf_file=src.name)
        # Not `from_pretrained(gguf_file=...)`: that path insists on `accelerate`; building the model from its
        # config and loading the dequantised tensors ourselves needs only torch + gguf.
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tensors = load_gguf_checkpoint(str(src), return_tensors=True, model_to_load=model,
                                       torch_dtype=torch.float32)["tensors"]
    except (ImportError, ValueError, OSError, KeyError) as exc:
        raise RecgptError(f"{src}: cannot convert GGUF: {exc}", "needs `pip install gguf`") from exc
    result = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing:
        raise RecgptError(f"{src}: GGUF lacks weights for {sorted(missing)[:5]} (architecture not supported?)")
    model.tie_weights()
    # The weights are plain float32 now; a leftover quantization config would make loaders re-quantise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the embedded model)")
    args = ap.parse_args()
    print(convert_gguf_to_hf(args.out_dir, args.gguf))


if __name__ == "__main__":
    main()
