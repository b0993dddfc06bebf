"""StructuredLLM: validation, retries with new seeds, truncation, backend errors, usage totals."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from recgpt_cli.llm.base import BackendError, Completion, FakeBackend, SamplingParams
from recgpt_cli.llm.json_schema import normalise_schema
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import StructuredLLM, first_json_object, output_schema, parse_json_output

PROMPT = parse_prompt("---\ntask: demo\nversion: 1\noutput: Out\n---\nSystem.\n<!-- user -->\nName {{n}}.\n", "demo.md")


class Out(BaseModel):
    name: str
    score: int


def scripted(*replies: str) -> FakeBackend:
    """A fake that answers the given replies in order and records the params of each call."""
    seen: list[SamplingParams] = []
    it = iter(replies)

    def respond(messages: Any, schema: Any, params: SamplingParams) -> str:
        seen.append(params)
        return next(it)

    fake = FakeBackend(respond)
    fake.params_seen = seen  # type: ignore[attr-defined]
    return fake


def test_valid_first_try() -> None:
    fake = scripted('{"name": "a", "score": 3}')
    gen = StructuredLLM(fake).generate(PROMPT, {"n": "x"}, Out)
    assert gen.value == Out(name="a", score=3)
    assert (gen.attempts, gen.error, gen.cached) == (1, None, False)
    assert fake.calls[0] == [{"role": "system", "content": "System."}, {"role": "user", "content": "Name x."}]


def test_invalid_json_then_valid_retries_with_new_seed_and_warmer_temperature() -> None:
    fake = scripted("not json", '{"name": "b", "score": 1}')
    gen = StructuredLLM(fake, retries=2).generate(PROMPT, {"n": "x"}, Out, SamplingParams(seed=7))
    assert gen.ok and gen.attempts == 2 and gen.error is None
    first, second = fake.params_seen  # type: ignore[attr-defined]
    assert (first.seed, first.temperature) == (7, 0.0)
    assert second.seed == 1007 and second.temperature == 0.7
    assert gen.raw == '{"name": "b", "score": 1}'


def test_always_invalid_is_an_error_generation_not_an_exception() -> None:
    fake = scripted('{"name": "a"}', '{"name": "a"}', '{"name": "a"}')
    gen = StructuredLLM(fake, retries=2).generate(PROMPT, {"n": "x"}, Out)
    assert gen.value is None and not gen.ok
    assert gen.attempts == 3 and len(fake.calls) == 3
    assert gen.error is not None and gen.error.startswith("ValidationError")


def test_truncated_output_counts_as_failure_even_if_it_parses() -> None:
    class Cut:
        name, model_id = "cut", "cut-1"

        def __init__(self) -> None:
            self.n = 0

        def complete(self, messages: Any, schema: Any, params: SamplingParams) -> Completion:
            self.n += 1
            reason = "length" if self.n == 1 else "stop"
            return Completion('{"name": "a", "score": 1}', 5, 9, finish_reason=reason)

    backend = Cut()
    llm = StructuredLLM(backend, retries=0)
    gen = llm.generate(PROMPT, {"n": "x"}, Out, SamplingParams(max_tokens=9))
    assert gen.value is None and gen.error == "ValueError: output truncated at max_tokens=9"
    gen = StructuredLLM(backend, retries=1).generate(PROMPT, {"n": "x"}, Out)
    assert gen.ok and gen.completion_tokens == 9
    assert llm.usage.failed == 1 and llm.usage.completion_tokens == 9


def test_backend_error_is_recorded_without_retry() -> None:
    class TooLong:
        name, model_id = "x", "x"
        calls = 0

        def complete(self, messages: Any, schema: Any, params: SamplingParams) -> Completion:
            TooLong.calls += 1
            raise BackendError("prompt of ~5000 tokens does not fit the 4096-token context")

    gen = StructuredLLM(TooLong(), retries=3).generate(PROMPT, {"n": "x"}, Out)
    assert gen.value is None and TooLong.calls == 1
    assert gen.error == "BackendError: prompt of ~5000 tokens does not fit the 4096-token context"


def test_missing_variable_raises_before_any_call() -> None:
    from recgpt_cli.errors import BadInput

    fake = scripted()
    with pytest.raises(BadInput, match="needs variables not given: n"):
        StructuredLLM(fake).generate(PROMPT, {}, Out)
    assert fake.calls == []


def test_json_wrapped_in_prose_is_extracted() -> None:
    assert parse_json_output('Sure! ```json\n{"a": "}{", "b": {"c": 1}}\n``` done') == {"a": "}{", "b": {"c": 1}}
    assert first_json_object('x {"a": "\\"}"} y') == '{"a": "\\"}"}'
    assert first_json_object("no object") is None


class Inner(BaseModel):
    id: str = Field(max_length=4)
    note: str | None = None


class Outer(BaseModel):
    items: list[Inner] = Field(max_length=3)


def test_schema_refs_inlined_all_required_titles_dropped() -> None:
    assert output_schema(Outer) == {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "maxItems": 3, "items": {
            "type": "object", "required": ["id", "note"],
            "properties": {"id": {"type": "string", "maxLength": 4},
                           "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}},
    }


def test_recursive_schema_keeps_refs() -> None:
    schema = {"$defs": {"T": {"type": "object", "properties": {"kids": {"type": "array",
                                                                        "items": {"$ref": "#/$defs/T"}}}}},
              "$ref": "#/$defs/T"}
    out = normalise_schema(schema)
    assert out["properties"]["kids"]["items"] == {"$ref": "#/$defs/T"}
    assert "T" in out["$defs"]


def test_llama_grammar_accepts_normalised_pydantic_schema() -> None:
    import json

    from llama_cpp import LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(json.dumps(output_schema(Outer)), verbose=False)
    assert "items" in grammar._grammar
