"""transformers backend: plumbing on a tiny random model (fast) and the real converted embedded model (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from recgpt_cli.errors import RecgptError
from recgpt_cli.llm.base import SamplingParams
from recgpt_cli.llm.hf_backend import HFBackend, schema_skeleton, with_schema_hint
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import StructuredLLM

PROMPT = parse_prompt("---\ntask: t\nversion: 1\noutput: C\n---\nWhat colour is the sky?\n", "t.md")


class C(BaseModel):
    colour: str


def test_schema_skeleton_and_hint() -> None:
    schema = {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "object", "properties": {
            "tag": {"type": "string"}, "n": {"type": "integer"}, "kind": {"enum": ["a", "b"]},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]}}}}}}
    assert schema_skeleton(schema) == {"tags": [{"tag": "...", "n": 0, "kind": "a", "note": "..."}]}
    msgs = [{"role": "user", "content": "Q"}]
    assert with_schema_hint(msgs, {"type": "object", "properties": {"x": {"type": "boolean"}}}) == [
        {"role": "user", "content": 'Q\n\nReply with only JSON shaped like: {"x":true}'}]
    assert msgs == [{"role": "user", "content": "Q"}]  # not mutated


def tiny_model_dir(path: Path) -> Path:
    """A 2-layer random Llama with a character-level tokenizer: exercises loading/generation in a second."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = list(' {}":,abcdefghijklmnopqrstuvwxyzQ?\n.')
    vocab = {"<eos>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=0, bos_token_id=0, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_tiny_model_generation_length_and_model_id(tmp_path: Path) -> None:
    d = tiny_model_dir(tmp_path / "tiny")
    backend = HFBackend(d, max_context=256)
    out = backend.complete(PROMPT.render({}), {"type": "object", "properties": {"colour": {"type": "string"}}},
                           SamplingParams(max_tokens=5))
    assert out.text.startswith("{")  # reply is started with "{" for object schemas
    assert out.prompt_tokens > 10 and out.completion_tokens <= 5
    gen = StructuredLLM(backend, retries=1).generate(PROMPT, {}, C, SamplingParams(max_tokens=5))
    assert gen.attempts == 2 and gen.error is not None  # random weights: invalid, recorded, not raised
    first = backend.model_id
    assert len(first) == 64 and HFBackend(d).model_id == first
    (d / "config.json").write_text((d / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    assert HFBackend(d).model_id != first


def test_not_a_model_dir(tmp_path: Path) -> None:
    with pytest.raises(RecgptError, match="not a transformers model directory"):
        HFBackend(tmp_path)


@pytest.mark.slow
@pytest.mark.model
def test_convert_embedded_gguf_then_serve_with_hf(tmp_path: Path) -> None:
    from recgpt_cli.llm.convert import convert_gguf_to_hf

    d = convert_gguf_to_hf(tmp_path / "smol")
    assert (d / "config.json").exists() and list(d.glob("*.safetensors"))
    assert convert_gguf_to_hf(d) == d  # second call is a no-op
    gen = StructuredLLM(HFBackend(d), retries=1).generate(PROMPT, {}, C, SamplingParams(max_tokens=20))
    assert gen.ok, (gen.error, gen.raw)
    assert gen.value.colour.strip() != ""  # type: ignore[union-attr]
