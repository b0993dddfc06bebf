"""Validated JSON generation: prompt + pydantic output model in, a typed object (or a recorded failure) out.

Stages call `StructuredLLM.generate`; they never talk to a backend directly. Invalid or truncated output is
retried with a different seed a bounded number of times, then returned as a failure with `error` set, so one
bad sample never crashes a batch (issue 3). `llm.usage` sums tokens over all calls (progress bars read it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from recgpt_cli.llm.base import Backend, BackendError, Completion, Message, SamplingParams, backend_concurrency
from recgpt_cli.llm.json_schema import normalise_schema
from recgpt_cli.llm.prompts import Prompt

T = TypeVar("T", bound=BaseModel)

# With greedy decoding a new seed reproduces the same bad output, so retries sample at least this warm.
RETRY_TEMPERATURE = 0.7


def resample_params(params: SamplingParams, attempt: int) -> SamplingParams:
    """Sampling for retry `attempt` (1, 2, ...): a different seed (the same seed would reproduce the same bad
    output), at least RETRY_TEMPERATURE warm."""
    return SamplingParams(max(params.temperature, RETRY_TEMPERATURE), params.top_p, params.max_tokens,
                          params.seed + 1000 * attempt)


class CompletionCache(Protocol):
    """Content-addressed store of completions (implemented over DuckDB in `llm.cache`)."""

    def get(self, key: str, *, prompt: Prompt | None = None, messages: list[Message] | None = None
            ) -> Completion | None: ...

    def put(self, key: str, completion: Completion, *, prompt: Prompt, messages: list[Message]) -> None: ...

    def log_failure(self, key: str, completion: Completion | None, *, prompt: Prompt, messages: list[Message],
                    error: str) -> None: ...

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
    # The completion the answer came from, fresh or cached: its tokens and latency are what the answer cost when it
    # was made (prompt_tokens etc. above count only this run's calls). Benchmarks report cost per user from it.
    origin: Completion | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass
class Usage:
    """Running totals over every `generate` call of one StructuredLLM (cache hits cost no tokens)."""

    generations: int = 0
    failed: int = 0
    backend_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON schema handed to the backend's constrained decoder: pydantic's, $refs inlined, unsupported keys gone."""
    return normalise_schema(model.model_json_schema())


def parse_json_output(text: str) -> Any:
    """The JSON value in a reply. Grammar-constrained backends return bare JSON; free-running ones (hf) may wrap
    it in prose or ```json fences, so fall back to the first balanced {...} object."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        candidate = first_json_object(text)
        if candidate is None:
            raise
        return orjson.loads(candidate)


def first_json_object(text: str) -> str | None:
    """The first balanced `{...}` in `text` (strings and escapes respected), or None."""
    start = text.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                esc, in_str = (False, True) if esc else (c == "\\", c != '"')
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None


class StructuredLLM:
    """Backend + optional cache + validation/retry policy. Thread-safe when the backend is (openai)."""

    def __init__(self, backend: Backend, *, cache: CompletionCache | None = None, retries: int = 2) -> None:
        self.backend = backend
        self.cache = cache
        self.retries = retries
        self.usage = Usage()
        self._lock = threading.Lock()

    @property
    def concurrency(self) -> int:
        """Calls worth running at once: >1 only for HTTP backends (pass to `run_batch(concurrency=...)`)."""
        return backend_concurrency(self.backend)

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
        for attempt in range(self.retries + 1):
            p = params if attempt == 0 else resample_params(params, attempt)
            key = self.cache.key(self.backend, prompt, messages, schema, p) if self.cache is not None else ""
            gen.attempts = attempt + 1
            hit = self.cache.get(key, prompt=prompt, messages=messages) if self.cache is not None else None
            if hit is not None and self._accept(gen, hit, output, p, cached=True):
                with self._lock:
                    self.usage.cache_hits += 1
                break
            # A cached completion that no longer validates (older rules) is asked again, never trusted.
            try:
                completion = self._call(messages, schema, p)
            except BackendError as exc:
                gen.error = f"BackendError: {exc.message}"
                if self.cache is not None:
                    self.cache.log_failure(key, None, prompt=prompt, messages=messages, error=gen.error)
                break  # another seed cannot fix a prompt that does not fit or a server that keeps failing
            if self._accept(gen, completion, output, p, cached=False):
                # Only valid completions are cached: a failure is retried by the next run, not replayed.
                if self.cache is not None:
                    self.cache.put(key, completion, prompt=prompt, messages=messages)
                break
            if self.cache is not None:  # logged for the audit, never cached
                self.cache.log_failure(key, completion, prompt=prompt, messages=messages, error=gen.error or "")
        with self._lock:
            self.usage.generations += 1
            self.usage.failed += gen.value is None
            self.usage.prompt_tokens += gen.prompt_tokens
            self.usage.completion_tokens += gen.completion_tokens
        return gen

    @staticmethod
    def _accept(gen: Generation[T], completion: Completion, output: type[T], params: SamplingParams, *,
                cached: bool) -> bool:
        """Validate `completion` into `gen` (value or error); count its tokens when it was not cached."""
        gen.cached = cached
        gen.raw = completion.text
        gen.origin = completion
        if not cached:
            gen.prompt_tokens += completion.prompt_tokens
            gen.completion_tokens += completion.completion_tokens
            gen.latency_s += completion.latency_s
        try:
            if completion.finish_reason == "length":
                raise ValueError(f"output truncated at max_tokens={params.max_tokens}")
            gen.value = output.model_validate(parse_json_output(completion.text))
            gen.error = None
            return True
        except (orjson.JSONDecodeError, ValidationError, ValueError) as exc:
            gen.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return False

    def _call(self, messages: list[Message], schema: dict[str, Any], params: SamplingParams) -> Completion:
        t0 = time.perf_counter()
        completion = self.backend.complete(messages, schema, params)
        if not completion.latency_s:
            completion.latency_s = time.perf_counter() - t0
        with self._lock:
            self.usage.backend_calls += 1
        return completion
