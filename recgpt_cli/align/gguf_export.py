"""Export a fine-tuned Llama-architecture transformers directory back to GGUF, so the default backend can serve it.

Alignment (§2.1.2, §2.2.2) trains the torch weights that `recgpt_cli.llm.convert` dequantised from the embedded
GGUF, but the default backend is llama.cpp, which only reads GGUF. llama.cpp's `convert_hf_to_gguf.py` is not a
pip-installable package, so this is our own small exporter for the one architecture we fine-tune.

It copies every metadata key of a *template* GGUF (default: the embedded model) — architecture, hyperparameters,
and the whole tokenizer block with its chat template — so the export tokenises and prompts exactly like the
model it was trained from; only the tensors come from the HF directory. Hence the HF config must match the
template's shapes. Usage: `python -m recgpt_cli.align.gguf_export HF_DIR OUT.gguf [--template T.gguf]
[--type q8_0|f16|f32]`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recgpt_cli.errors import RecgptError
from recgpt_cli.llm.embedded import embedded_model_path

OUT_TYPES = ("q8_0", "f16", "f32")

# Keys that describe the file being written, not the model: set anew for the export.
_FILE_KEYS = {"general.architecture", "general.file_type", "general.quantization_version"}

# HF layer suffix -> GGUF tensor name inside `blk.N.` (the names llama.cpp looks up for the llama architecture).
_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_tensor_name(hf_name: str) -> str | None:
    """The GGUF name of an HF Llama weight, or None when it has none (a buffer such as `rotary_emb.inv_freq`)."""
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    parts = hf_name.split(".", 3)  # model, layers, N, suffix
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit() and parts[3] in _LAYER_NAMES:
        return f"blk.{parts[2]}.{_LAYER_NAMES[parts[3]]}"
    return None


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from transformers' rotary layout to llama.cpp's.

    transformers rotates the two *halves* of each head (`rotate_half`); llama.cpp rotates adjacent *pairs*. Per
    head, HF rows [x_0..x_{d/2-1}, y_0..y_{d/2-1}] become [x_0, y_0, x_1, y_1, ...]. This is the inverse of the
    `_reverse_permute_weights` transformers applies when it loads a GGUF, so GGUF -> HF -> GGUF round-trips."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass(frozen=True)
class _Template:
    meta: dict[str, Any]  # metadata as plain Python values, in file order (the reader's `GGUF.*` keys left out)
    types: dict[str, tuple[Any, Any]]  # key -> (GGUFValueType, element type of an array or None)
    shapes: dict[str, tuple[int, ...]]  # tensor name -> numpy (outermost-first) shape


@functools.lru_cache(maxsize=2)
def _read_template(path: Path, mtime_ns: int, size: int) -> _Template:
    """Parse a template GGUF once per process (keyed by its mtime and size): the reader walks ~100k tokenizer
    strings one memmap slice at a time, which costs seconds, and an export run often writes several types."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise RecgptError(f"{path}: cannot read template GGUF: {exc}") from exc
    fields = {name: field for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return _Template(
        meta={name: field.contents() for name, field in fields.items()},
        types={name: (field.types[0], field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None)
               for name, field in fields.items()},
        # The reader lists shapes innermost-first (ggml order); numpy arrays are outermost-first.
        shapes={t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors},
    )


def _check_config(config: dict[str, Any], meta: dict[str, Any], hf_dir: Path, template: Path) -> str:
    """Raise unless the HF config has the template's architecture and shapes; return the architecture name."""
    arch = str(meta.get("general.architecture", ""))
    if arch != "llama" or config.get("model_type") != "llama":
        raise RecgptError(f"{hf_dir}: model_type {config.get('model_type')!r} with template architecture {arch!r}: "
                          "only llama is supported", "export a Llama-architecture model (e.g. SmolLM2)")
    rope = config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta"))
    pairs = [  # (HF config key, its value, template key)
        ("num_hidden_layers", config.get("num_hidden_layers"), f"{arch}.block_count"),
        ("hidden_size", config.get("hidden_size"), f"{arch}.embedding_length"),
        ("intermediate_size", config.get("intermediate_size"), f"{arch}.feed_forward_length"),
        ("num_attention_heads", config.get("num_attention_heads"), f"{arch}.attention.head_count"),
        ("num_key_value_heads", config.get("num_key_value_heads"), f"{arch}.attention.head_count_kv"),
        ("vocab_size", config.get("vocab_size"), f"{arch}.vocab_size"),
        ("rope_theta", rope, f"{arch}.rope.freq_base"),
        ("rms_norm_eps", config.get("rms_norm_eps"), f"{arch}.attention.layer_norm_rms_epsilon"),
    ]
    if f"{arch}.vocab_size" not in meta:  # older GGUFs only imply it by the token list
        meta = {**meta, f"{arch}.vocab_size": len(meta.get("tokenizer.ggml.tokens", []))}
    wrong = [f"{hf_key}={hf_val} but {gg_key}={meta.get(gg_key)}" for hf_key, hf_val, gg_key in pairs
             if gg_key in meta and (hf_val is None or not math.isclose(float(hf_val), float(meta[gg_key]),
                                                                       rel_tol=1e-6))]
    if wrong:
        raise RecgptError(f"{hf_dir}: config does not match template {template.name}: {'; '.join(wrong)}",
                          "pass --template with the GGUF this model was converted from")
    return arch


def _encode(w: np.ndarray, out_type: str) -> tuple[np.ndarray, Any]:
    """(data, raw ggml type or None) for one tensor. Norms (1-D) stay float32 as llama.cpp expects; a matrix whose
    rows are not whole quant blocks falls back to f16. Not q4_1 (the embedded model's own type): re-quantised to
    4 bits, a LoRA fine-tune's small weight changes vanish (measured: its reasons went back to "...")."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quantize

    if w.ndim == 1 or out_type == "f32":
        return w.astype(np.float32), None
    qtype = {"q8_0": GGMLQuantizationType.Q8_0}.get(out_type)
    if qtype is not None and w.shape[-1] % GGML_QUANT_SIZES[qtype][0] == 0:
        return quantize(w, qtype), qtype
    return w.astype(np.float16), None


def _file_type(out_type: str) -> int:
    from gguf import LlamaFileType

    return int({"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
                "q8_0": LlamaFileType.MOSTLY_Q8_0}[out_type])


def export_gguf(hf_dir: Path | str, out_path: Path | str, *, template: Path | str | None = None,
                out_type: str = "q8_0") -> Path:
    """Write the weights of the transformers Llama model in `hf_dir` (safetensors, any float dtype) to `out_path`
    as GGUF, with the metadata and tokenizer of `template` (default: the embedded model). `out_type`: "q8_0"
    (default; near-lossless, ~1/4 the size of f32), "f16" or "f32". Written atomically; returns `out_path`."""
    if out_type not in OUT_TYPES:
        raise RecgptError(f"unknown GGUF type {out_type!r}", f"use one of {', '.join(OUT_TYPES)}")
    hf = Path(hf_dir)
    out = Path(out_path)
    tpl = Path(template) if template is not None else embedded_model_path()
    gguf, safe_open = _writer_modules()
    config = _read_config(hf / "config.json", "pass a transformers model directory")
    shards = sorted(hf.glob("*.safetensors"))
    if not shards:
        raise RecgptError(f"{hf}: no *.safetensors weights", "save the model with safe_serialization=True")
    try:
        stat = tpl.stat()
    except OSError as exc:
        raise RecgptError(f"{tpl}: cannot read template GGUF: {exc}") from exc
    base = _read_template(tpl.resolve(), stat.st_mtime_ns, stat.st_size)
    arch = _check_config(config, base.meta, hf, tpl)
    expected = base.shapes
    n_head, n_head_kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    tied = bool(config.get("tie_word_embeddings", False))

    writer = gguf.GGUFWriter(None, arch)
    _copy_metadata(writer, base, out_type)

    written: set[str] = set()
    unknown: list[str] = []
    for shard in shards:
        # "pt" rather than "np": numpy has no bfloat16, a common dtype for fine-tuned weights.
        with safe_open(str(shard), framework="pt") as f:
            for hf_name in f.keys():
                name = gguf_tensor_name(hf_name)
                if name is None:
                    if not hf_name.endswith("rotary_emb.inv_freq"):  # recomputed from rope_theta by llama.cpp
                        unknown.append(hf_name)
                    continue
                if name == "output.weight" and tied:  # llama.cpp reuses token_embd when output is absent
                    continue
                w = f.get_tensor(hf_name).float().numpy()
                if name.endswith("attn_q.weight"):
                    w = rope_permute(w, n_head)
                elif name.endswith("attn_k.weight"):
                    w = rope_permute(w, n_head_kv)
                want = expected.get(name, w.shape if name == "output.weight" else None)
                if want != w.shape:
                    raise RecgptError(f"{shard}: {hf_name} has shape {tuple(w.shape)}, template {tpl.name} "
                                      f"{'has no ' + name if want is None else 'expects ' + str(want)}")
                data, raw_type = _encode(w, out_type)
                writer.add_tensor(name, data, raw_dtype=raw_type)
                written.add(name)
    if unknown:
        raise RecgptError(f"{hf}: {len(unknown)} weights with no GGUF name, e.g. {unknown[:3]}",
                          "merge LoRA adapters into the base weights before exporting")
    missing = sorted(set(expected) - written)
    if missing:
        raise RecgptError(f"{hf}: lacks {len(missing)} weights the template has, e.g. {missing[:3]}")

    _write_atomically(writer, out)
    return out


def export_lora_gguf(adapter_dir: Path | str, out_path: Path | str, *, template: Path | str | None = None,
                     out_type: str = "f16") -> Path:
    """Write a peft LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) as a llama.cpp LoRA GGUF,
    served on top of `template` (default: the embedded model) without merging: `Llama(lora_path=...)`.

    The adapter was trained on the weights `llm.convert` dequantised from that GGUF, so base + adapter at run time
    is the trained model itself, where a merged export must be re-quantised (q4_1 erased the fine-tune; q8_0 is
    twice the base's size). Layout (llama.cpp's llama-adapter.cpp): `general.type` "adapter", `adapter.type`
    "lora", `adapter.lora.alpha` (float32; llama.cpp scales by alpha / rank as peft does), and per base tensor
    `<name>.lora_a` (rank x in) and `<name>.lora_b` (out x rank); q/k's lora_b rows take the base's rope order."""
    if out_type not in ("f16", "f32"):
        raise RecgptError(f"unknown LoRA GGUF type {out_type!r}", "use f16 or f32")
    src = Path(adapter_dir)
    out = Path(out_path)
    tpl = Path(template) if template is not None else embedded_model_path()
    gguf, safe_open = _writer_modules()
    config = _read_config(src / "adapter_config.json", "pass an `align sft` adapter/ dir")
    weights = src / "adapter_model.safetensors"
    if config.get("peft_type") != "LORA" or not weights.is_file():
        raise RecgptError(f"{src}: not a peft LoRA adapter with adapter_model.safetensors")
    # Variants llama.cpp cannot express as one alpha: per-module ranks/alphas, rsLoRA's alpha/sqrt(r), DoRA.
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_rslora") or config.get("use_dora"):
        raise RecgptError(f"{src}: rank/alpha patterns, rsLoRA and DoRA adapters have no llama.cpp LoRA form",
                          "merge it instead: `recgpt align export`")
    stat = tpl.stat()
    base = _read_template(tpl.resolve(), stat.st_mtime_ns, stat.st_size)
    arch = str(base.meta.get("general.architecture", ""))
    if arch != "llama":
        raise RecgptError(f"{tpl}: architecture {arch!r}: only llama is supported")
    n_head = int(base.meta[f"{arch}.attention.head_count"])
    n_head_kv = int(base.meta.get(f"{arch}.attention.head_count_kv", n_head))

    writer = gguf.GGUFWriter(None, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(config["lora_alpha"]))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            stem, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
            name = gguf_tensor_name(stem + ".weight")
            if name is None or part not in ("A.weight", "B.weight"):
                raise RecgptError(f"{weights}: {key} has no llama.cpp LoRA name",
                                  "only q/k/v/o/gate/up/down projections are supported")
            pairs.setdefault(name, {})[part[0]] = f.get_tensor(key).float().numpy()
    for name, ab in sorted(pairs.items()):
        a, b = ab.get("A"), ab.get("B")
        shape = base.shapes.get(name)
        if a is None or b is None or shape is None or a.shape[1] != shape[1] or b.shape[0] != shape[0] \
                or a.shape[0] != b.shape[1]:
            raise RecgptError(f"{weights}: the LoRA pair of {name} does not fit {tpl.name} "
                              f"(A {None if a is None else a.shape}, B {None if b is None else b.shape}, base {shape})")
        if name.endswith("attn_q.weight"):
            b = rope_permute(b, n_head)
        elif name.endswith("attn_k.weight"):
            b = rope_permute(b, n_head_kv)
        dtype = np.float16 if out_type == "f16" else np.float32
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a.astype(dtype)))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b.astype(dtype)))
    if not pairs:
        raise RecgptError(f"{weights}: holds no LoRA weights")
    _write_atomically(writer, out)
    return out


def merge_lora_gguf(base: Path | str, adapter: Path | str, out_path: Path | str, *, out_type: str = "q8_0") -> Path:
    """Write `base` (a llama GGUF) with the LoRA GGUF `adapter` added into its weights: W + alpha/rank * B A.

    numpy only (no torch, seconds): the tensors the adapter touches are dequantised, merged and written as
    `out_type` ("q8_0", "f16" or "f32"; never back to 4 bits, which erases a fine-tune); every other tensor and
    every metadata key is copied as it is. Served by llama.cpp at the base model's speed class, where applying the
    adapter at run time measured ~1.5x slower on this 135M model (extra graph nodes per layer)."""
    import gguf
    from gguf.quants import dequantize

    if out_type not in OUT_TYPES:
        raise RecgptError(f"unknown GGUF type {out_type!r}", f"use one of {', '.join(OUT_TYPES)}")
    try:
        ad = gguf.GGUFReader(Path(adapter))
        reader = gguf.GGUFReader(Path(base))
    except (OSError, ValueError) as exc:
        raise RecgptError(f"cannot read GGUF: {exc}") from exc
    kind = ad.fields.get("adapter.type")
    alpha_field = ad.fields.get("adapter.lora.alpha")
    if kind is None or kind.contents() != "lora" or alpha_field is None:
        raise RecgptError(f"{adapter}: not a llama.cpp LoRA adapter GGUF (adapter.type / adapter.lora.alpha)")
    alpha = float(alpha_field.contents())
    lora: dict[str, dict[str, np.ndarray]] = {}
    for t in ad.tensors:
        name, _, part = t.name.rpartition(".lora_")
        lora.setdefault(name, {})[part] = np.asarray(t.data, dtype=np.float32)
    stat = Path(base).stat()
    template = _read_template(Path(base).resolve(), stat.st_mtime_ns, stat.st_size)
    writer = gguf.GGUFWriter(None, str(template.meta["general.architecture"]))
    _copy_metadata(writer, template, out_type)
    merged: set[str] = set()
    for t in reader.tensors:
        ab = lora.get(t.name)
        if ab is None:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
            continue
        a, b = ab["a"], ab["b"]
        w = dequantize(t.data, t.tensor_type).reshape(tuple(int(d) for d in reversed(t.shape)))
        if a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0] or a.shape[0] != b.shape[1]:
            raise RecgptError(f"{adapter}: the LoRA pair of {t.name} (A {a.shape}, B {b.shape}) does not fit "
                              f"{Path(base).name} ({w.shape})")
        data, raw_type = _encode(w + (alpha / a.shape[0]) * (b @ a), out_type)
        writer.add_tensor(t.name, data, raw_dtype=raw_type)
        merged.add(t.name)
    if set(lora) - merged:
        raise RecgptError(f"{adapter}: {len(set(lora) - merged)} LoRA pairs name no tensor of {Path(base).name}, "
                          f"e.g. {sorted(set(lora) - merged)[:2]}")
    out = Path(out_path)
    _write_atomically(writer, out)
    return out


def _copy_metadata(writer: Any, template: _Template, out_type: str) -> None:
    """Every metadata key of `template` but those describing the file, then this file's type and quant version."""
    import gguf

    for key, value in template.meta.items():
        if key not in _FILE_KEYS:
            vtype, sub_type = template.types[key]
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
    writer.add_file_type(_file_type(out_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _writer_modules() -> tuple[Any, Any]:
    """(gguf, safetensors.safe_open), or a clear error when the optional writers are missing."""
    try:
        import gguf
        from safetensors import safe_open
    except ImportError as exc:
        raise RecgptError(f"exporting GGUF needs gguf + safetensors: {exc}", "pip install gguf safetensors") from exc
    return gguf, safe_open


def _read_config(path: Path, hint: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecgptError(f"{path.parent}: cannot read {path.name}: {exc}", hint) from exc
    if not isinstance(data, dict):
        raise RecgptError(f"{path}: not a JSON object", hint)
    return data


def _write_atomically(writer: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # pipe stages may merge the same model at once
    try:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:  # a failed write leaves neither a half file nor the temporary
        writer.close()
        tmp.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hf_dir", type=Path, help="transformers model directory (config.json + *.safetensors)")
    ap.add_argument("out", type=Path, help="GGUF file to write")
    ap.add_argument("--template", type=Path, default=None,
                    help="GGUF whose metadata and tokenizer to copy (default: the embedded model)")
    ap.add_argument("--type", dest="out_type", choices=OUT_TYPES, default="q8_0", help="tensor type (default q8_0)")
    args = ap.parse_args()
    try:
        print(export_gguf(args.hf_dir, args.out, template=args.template, out_type=args.out_type))
    except RecgptError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
