"""GGUF export: the embedded model, dequantised to HF and exported back, must decode the same under llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recgpt_cli.align.gguf_export import export_gguf, rope_permute
from recgpt_cli.errors import RecgptError
from recgpt_cli.llm.llama_cpp_backend import load_llama

pytestmark = pytest.mark.model

PROMPTS = ["What is the capital of France?", "List three fruits.", "Write a haiku about rain."]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def hf_dir(embedded_hf: Path) -> Path:
    return embedded_hf


@pytest.fixture(scope="module")
def exported(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf_export")
    return {t: export_gguf(hf_dir, out / f"model.{t}.gguf", out_type=t) for t in ("f32", "q8_0")}


@pytest.fixture(scope="module")
def hf_reference(hf_dir: Path) -> list[dict]:
    """Per prompt: the chat-templated text, its token ids, HF's greedy continuation and first-token logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    refs = []
    for prompt in PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, -1].numpy()
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)[0, ids.shape[1]:].tolist()
        refs.append({"text": text, "ids": ids[0].tolist(), "logits": logits,
                     "completion": tok.decode(out, skip_special_tokens=True)})
    return refs


def test_rope_permute_inverts_transformers_gguf_loader() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6 * 8, 5)  # 6 heads of dim 8, 5 inputs
    back = LlamaTensorProcessor(config={})._reverse_permute_weights(rope_permute(w, 6), 6)
    assert np.array_equal(back, w)
    # Per head, the halves interleave: rows [0..3 | 4..7] -> 0, 4, 1, 5, 2, 6, 3, 7.
    assert rope_permute(w, 6)[:8, 0].tolist() == [0, 20, 5, 25, 10, 30, 15, 35]


def test_f32_export_greedy_matches_transformers(exported: dict[str, Path], hf_reference: list[dict]) -> None:
    llm = load_llama(model_path=str(exported["f32"]), n_ctx=512, n_threads=1, verbose=False)
    for ref in hf_reference:
        # The chat template already starts with <|im_start|> (the BOS token) and the GGUF says add_bos_token=false,
        # so llama.cpp sees the same ids as transformers: no double BOS.
        assert llm.tokenize(ref["text"].encode(), add_bos=True, special=True) == ref["ids"]
        out = llm.create_completion(ref["text"], max_tokens=NEW_TOKENS, temperature=0.0)
        assert out["choices"][0]["text"] == ref["completion"]


def test_q8_0_export_is_smaller_and_close(exported: dict[str, Path], hf_reference: list[dict]) -> None:
    assert exported["q8_0"].stat().st_size < exported["f32"].stat().st_size / 3
    llm = load_llama(model_path=str(exported["q8_0"]), n_ctx=512, n_threads=1, verbose=False, logits_all=True)
    assert llm.metadata["general.file_type"] == "7"  # MOSTLY_Q8_0, not the template's Q4_1 (3)
    assert llm.metadata["tokenizer.chat_template"].startswith("{% for message in messages %}")
    for ref in hf_reference:
        llm.reset()
        llm.eval(ref["ids"])
        q8 = np.asarray(llm.scores[llm.n_tokens - 1])
        hf = ref["logits"]
        # Quantisation moves logits by up to ~1.5 here, enough to swap near-ties (France: "The" 25.33 vs "L" 25.24),
        # so require the same distribution and a greedy pick among HF's top 3, not an identical argmax.
        assert np.corrcoef(q8, hf)[0, 1] > 0.99
        assert int((hf > hf[q8.argmax()]).sum()) < 3


def test_config_mismatch_is_refused(hf_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "hf"
    bad.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    config["num_hidden_layers"] -= 1
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
    out = tmp_path / "bad.gguf"
    with pytest.raises(RecgptError, match="num_hidden_layers=29 but llama.block_count=30"):
        export_gguf(bad, out)
    assert not out.exists() and not (tmp_path / "bad.gguf.tmp").exists()


def test_unknown_type_is_refused(hf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RecgptError, match="unknown GGUF type"):
        export_gguf(hf_dir, tmp_path / "x.gguf", out_type="q4_0")
