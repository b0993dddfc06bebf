"""The one small interface every backend implements: messages + JSON schema in, text out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from recgpt_cli.errors import RecgptError

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; all of them are part of the cache key."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0

    def with_seed(self, seed: int) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.max_tokens, seed)


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = "stop"  # "length" means the output was cut at max_tokens


class BackendError(RecgptError):
    """One call failed in a way a retry with another seed cannot fix (prompt longer than the context, HTTP 4xx).
    StructuredLLM records it as that sample's `error`; the batch goes on."""


class Backend(Protocol):
    """A text generator. `model_id` identifies the exact weights (content hash) and is part of every cache key."""

    @property
    def name(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    def complete(self, messages: list[Message], schema: dict[str, Any] | None, params: SamplingParams) -> Completion:
        """Generate one reply; when `schema` is given, constrain it to JSON matching the schema if possible."""
        ...


def backend_concurrency(backend: Backend) -> int:
    """How many calls a backend takes at once (optional `concurrency` attribute; 1 for in-process models)."""
    return max(1, int(getattr(backend, "concurrency", 1) or 1))


def enforces_schema(backend: Backend) -> bool:
    """Whether the backend decodes under the schema (a grammar: llama.cpp, an OpenAI-compatible server's guided
    decoding) rather than free-running (hf: optional `enforces_schema = False` attribute)."""
    return bool(getattr(backend, "enforces_schema", True))


Responder = Callable[[list[Message], "dict[str, Any] | None", SamplingParams], str]


@dataclass
class FakeBackend:
    """Deterministic backend for unit tests: `responder(messages, schema, params) -> reply text`."""

    responder: Responder
    name: str = "fake"
    model_id: str = "fake-model"
    calls: list[list[Message]] = field(default_factory=list)

    def complete(self, messages: list[Message], schema: dict[str, Any] | None, params: SamplingParams) -> Completion:
        self.calls.append(messages)
        text = self.responder(messages, schema, params)
        n_prompt = sum(len(m["content"].split()) for m in messages)
        return Completion(text=text, prompt_tokens=n_prompt, completion_tokens=len(text.split()))
