"""transformers backend: a causal LM from a local directory (how fine-tuned models from alignment are served).

No grammar here: decoding is free-running (greedy at temperature 0, sampled otherwise) and StructuredLLM pulls
the first JSON object out of the reply; its validation + retries catch the rest. A JSON skeleton of the schema
(`{"colour": "..."}`, easier on small models than the schema itself) is appended to the last message, and the
reply is started with `{` so the model continues an object instead of chatting. `model_id` hashes the
directory's config, tokenizer and weights.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.base import BackendError, Completion, Message, SamplingParams
from recgpt_cli.llm.fingerprint import files_sha256

_HASHED = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
           "adapter_config.json")


class HFBackend:
    """Backend over `AutoModelForCausalLM` + `AutoTokenizer` loaded (lazily, once) from `model_dir`."""

    name = "hf"
    concurrency = 1
    enforces_schema = False  # no grammar: an enum in the schema would only be copied from the skeleton

    def __init__(self, model_dir: Path | str, *, max_context: int = 4096) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise BadInput(f"{self.model_dir}: not a transformers model directory (no config.json)",
                              "convert the embedded GGUF once: python -m recgpt_cli.llm.convert DIR")
        self.max_context = max_context
        self._model: Any = None
        self._tok: Any = None
        self._model_id: str | None = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            files = {p for pattern in _HASHED for p in self.model_dir.glob(pattern)}
            self._model_id = files_sha256(files)
        return self._model_id

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            self._tok = AutoTokenizer.from_pretrained(str(self.model_dir))
            self._model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=torch.float32)
            self._model.eval()
        return self._model, self._tok

    def complete(self, messages: list[Message], schema: dict[str, Any] | None, params: SamplingParams) -> Completion:
        import torch

        with self._lock:
            model, tok = self._load()
            msgs = with_schema_hint(messages, schema)
            prefix = "{" if schema is not None and schema.get("type") == "object" else ""
            if tok.chat_template:
                text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) + prefix
            else:
                text = "\n\n".join(m["content"] for m in msgs) + "\n\nAnswer (JSON):\n" + prefix
            ids = tok(text, return_tensors="pt", add_special_tokens=not tok.chat_template)["input_ids"]
            n_prompt = int(ids.shape[1])
            room = self.max_context - n_prompt
            if room < 16:
                raise BackendError(f"prompt of {n_prompt} tokens does not fit the {self.max_context}-token context")
            max_new = min(params.max_tokens, room)
            torch.manual_seed(params.seed)
            sample = params.temperature > 0
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=sample,
                    temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
                    top_k=None, pad_token_id=tok.pad_token_id or tok.eos_token_id,
                )
            new = out[0, n_prompt:]
            n_new = int(new.shape[0])
            ended = n_new > 0 and int(new[-1]) in _eos_ids(model, tok)
            text = prefix + tok.decode(new, skip_special_tokens=True)
        return Completion(text=text, prompt_tokens=n_prompt, completion_tokens=n_new,
                          latency_s=time.perf_counter() - t0,
                          finish_reason="length" if n_new >= max_new and not ended else "stop")


def schema_skeleton(schema: dict[str, Any]) -> Any:
    """An example value with the schema's shape: objects keep their keys, arrays hold one example item."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return schema_skeleton(options[0])
    kind = schema.get("type")
    if kind == "object":
        return {k: schema_skeleton(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [schema_skeleton(schema.get("items", {}))]
    return {"integer": 0, "number": 0.0, "boolean": True, "null": None}.get(str(kind), "...")


def with_schema_hint(messages: list[Message], schema: dict[str, Any] | None) -> list[Message]:
    """Append a JSON skeleton of the schema to the last message (no grammar to enforce it here)."""
    if schema is None:
        return messages
    hint = "\n\nReply with only JSON shaped like: " + orjson.dumps(schema_skeleton(schema)).decode()
    out = [dict(m) for m in messages]
    out[-1]["content"] = out[-1]["content"] + hint
    return out


def _eos_ids(model: Any, tok: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tok.eos_token_id is not None:
        found.add(tok.eos_token_id)
    return found
