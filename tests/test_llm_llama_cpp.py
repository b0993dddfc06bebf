"""llama.cpp backend: real embedded model gives schema-valid JSON; plain-prompt fallback; thread default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from recgpt_cli.errors import RecgptError
from recgpt_cli.llm.base import SamplingParams
from recgpt_cli.llm.cache import DuckDBCache
from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend, default_threads, plain_prompt
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import StructuredLLM

PROMPT = parse_prompt(
    "---\ntask: t\nversion: 1\noutput: Interests\n---\nYou list a shopper's interests.\n<!-- user -->\n"
    "Bought: {{items}}. Give up to 2 interests as JSON.\n", "t.md")


class Interest(BaseModel):
    interest: str = Field(min_length=1, max_length=20)
    stage: str = Field(pattern="^(long-term|short-term)$")


class Interests(BaseModel):
    interests: list[Interest] = Field(min_length=1, max_length=2)


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    return LlamaCppBackend(n_ctx=1024)


@pytest.mark.model
def test_embedded_model_gives_schema_valid_json_and_caches(backend: LlamaCppBackend, tmp_path: Path) -> None:
    llm = StructuredLLM(backend, cache=DuckDBCache(tmp_path))
    params = SamplingParams(max_tokens=60)
    gen = llm.generate(PROMPT, {"items": "tennis racket, tennis balls"}, Interests, params)
    assert gen.ok, (gen.error, gen.raw)
    assert gen.attempts == 1 and gen.prompt_tokens > 10 and 0 < gen.completion_tokens <= 60
    again = llm.generate(PROMPT, {"items": "tennis racket, tennis balls"}, Interests, params)
    assert again.cached and again.value == gen.value
    assert len(backend.model_id) == 64 and backend.model_id == LlamaCppBackend().model_id


@pytest.mark.model
def test_base_model_path_without_chat_template(backend: LlamaCppBackend) -> None:
    assert backend.llm is not None  # load, then pretend the GGUF had no chat template
    backend._has_template = False
    try:
        out = backend.complete(PROMPT.render({"items": "golf balls"}), {"type": "object", "properties": {
            "ok": {"type": "boolean"}}, "required": ["ok"]}, SamplingParams(max_tokens=12))
    finally:
        backend._has_template = True
    assert out.text.replace(" ", "") in ('{"ok":true}', '{"ok":false}'), out.text
    assert out.finish_reason == "stop"


@pytest.mark.model
def test_max_tokens_is_clamped_to_context(backend: LlamaCppBackend) -> None:
    from recgpt_cli.llm.base import BackendError

    huge = [{"role": "user", "content": "word " * 1200}]
    with pytest.raises(BackendError, match="does not fit the 1024-token context"):
        backend.complete(huge, None, SamplingParams(max_tokens=10))


def test_plain_prompt_and_threads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    msgs = [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": " Hi"}]
    assert plain_prompt(msgs, json_output=True) == "Be brief.\n\nHi\n\nAnswer (JSON):\n"
    monkeypatch.setenv("RECGPT_THREADS", "3")
    assert default_threads() == 3
    # an asked-for count bounds prompt evaluation too (llama.cpp's default is every core: shard workers collided)
    assert LlamaCppBackend().n_threads_batch == 3
    monkeypatch.delenv("RECGPT_THREADS")
    assert default_threads() >= 1
    assert LlamaCppBackend().n_threads_batch is None and LlamaCppBackend(n_threads=2).n_threads_batch == 2
    with pytest.raises(RecgptError, match="no such GGUF model file"):
        LlamaCppBackend(tmp_path / "missing.gguf")


def test_grammar_keeps_schema_property_order_and_is_built_once() -> None:
    backend = LlamaCppBackend()
    schema = {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}},
              "required": ["zeta", "alpha"]}
    g = backend._grammar(schema)
    root = next(line for line in g._grammar.splitlines() if line.startswith("root ::="))
    assert root.index("zeta") < root.index("alpha")
    assert backend._grammar(dict(schema)) is g


@pytest.mark.parametrize("amx", [True, False])
def test_a_library_with_amx_kernels_loads_without_extra_buffers(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    # AMX kernels can segfault on the first decode (ggml-org/llama.cpp#20824): with them in the library the model
    # is loaded without llama.cpp's extra buffer types, and llama-cpp-python's params factory is left as it was.
    import llama_cpp.llama as llama_module

    from recgpt_cli.llm import llama_cpp_backend
    from recgpt_cli.llm.embedded import embedded_model_path

    factory = llama_module.llama_cpp.llama_model_default_params
    monkeypatch.setattr(llama_cpp_backend, "built_with_amx", lambda: amx)
    llm = llama_cpp_backend.load_llama(model_path=str(embedded_model_path()), vocab_only=True, n_ctx=16,
                                       verbose=False)
    assert llm.model_params.use_extra_bufts is (not amx)
    assert llama_module.llama_cpp.llama_model_default_params is factory
    assert factory().use_extra_bufts
