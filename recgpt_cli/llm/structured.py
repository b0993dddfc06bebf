"""Validated JSON generation: prompt + pydantic output model in, a typed object (or a recorded failure) out.

Stages call `StructuredLLM.generate`; they never talk to a backend directly. Invalid or truncated output is
retried with a different seed a bounded number of times, then returned as a failure with `error` set, so one
bad sample never crashes a batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from recgpt_cli.llm.base import Backend, Completion, Message, SamplingParams
from recgpt_cli.llm.prompts import Prompt

T = TypeVar("T", bound=BaseModel)


class CompletionCache(Protocol):
    """Content-addressed store of completions (implemented over DuckDB in `llm.cache`)."""

    def get(self, key: str) -> Completion | None: ...

    def put(self, key: str, completion: Completion, *, prompt: Prompt, messages: list[Message]) -> None: ...

    def key(self, backend: Backend, prompt: Prompt, messages: list[Message], schema: dict[str, Any] | None,
            params: SamplingParams) -> str: ...


@dataclass
class Generation(Generic[T]):
    value: T | None
    error: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON schema handed to the backend's constrained decoder."""
    return model.model_json_schema()


class StructuredLLM:
    """Backend + optional cache + validation/retry policy."""

    def __init__(self, backend: Backend, *, cache: CompletionCache | None = None, retries: int = 2) -> None:
        self.backend = backend
        self.cache = cache
        self.retries = retries

    def generate(
        self,
        prompt: Prompt,
        variables: dict[str, Any],
        output: type[T],
        params: SamplingParams | None = None,
    ) -> Generation[T]:
        """Render `prompt`, generate JSON constrained by `output`'s schema, validate it. §2 stages use this."""
        params = params or SamplingParams()
        messages = prompt.render(variables)
        schema = output_schema(output)
        gen: Generation[T] = Generation(value=None)
        last_error = "no attempt made"
        for attempt in range(self.retries + 1):
            # A different seed per retry: the same seed would reproduce the same invalid output.
            p = params if attempt == 0 else params.with_seed(params.seed + 1000 * attempt)
            completion, cached = self._complete(prompt, messages, schema, p)
            gen.attempts = attempt + 1
            gen.cached = cached
            gen.raw = completion.text
            if not cached:
                gen.prompt_tokens += completion.prompt_tokens
                gen.completion_tokens += completion.completion_tokens
                gen.latency_s += completion.latency_s
            try:
                if completion.finish_reason == "length":
                    raise ValueError(f"output truncated at max_tokens={p.max_tokens}")
                gen.value = output.model_validate(orjson.loads(completion.text))
                gen.error = None
                return gen
            except (orjson.JSONDecodeError, ValidationError, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                gen.error = last_error
        return gen

    def _complete(
        self, prompt: Prompt, messages: list[Message], schema: dict[str, Any], params: SamplingParams
    ) -> tuple[Completion, bool]:
        key = self.cache.key(self.backend, prompt, messages, schema, params) if self.cache else ""
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit, True
        t0 = time.perf_counter()
        completion = self.backend.complete(messages, schema, params)
        if not completion.latency_s:
            completion.latency_s = time.perf_counter() - t0
        if self.cache is not None:
            self.cache.put(key, completion, prompt=prompt, messages=messages)
        return completion, False
