"""LLMOptions: the parsed LLM settings of one command (`--backend`, `--model`, ... see commands/llm_options.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import date as Date
from pathlib import Path

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.base import SamplingParams
from recgpt_cli.llm.prompts import Prompt, load_prompt

BACKENDS = ("llama-cpp", "hf", "openai")  # "fake" exists for tests only, never on the CLI
DEFAULT_CACHE_DIR = ".recgpt-cache"


def parse_day(value: str | Date | None) -> Date | None:
    """`YYYY-MM-DD` -> date; None stays None. A bad value is a BadInput naming the option."""
    if value is None or isinstance(value, Date):
        return value
    try:
        return Date.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(f"--date {value!r}: expected YYYY-MM-DD, e.g. 2025-07-01") from None


@dataclass(frozen=True)
class LLMOptions:
    """The parsed LLM options of one command; `recgpt_cli.llm.factory.make_llm` turns them into a StructuredLLM."""

    backend: str = "llama-cpp"
    model: str | None = None
    base_url: str | None = None
    concurrency: int = 4
    no_cache: bool = False
    cache_dir: Path | None = None
    prompt: str | None = None
    date: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        backend = str(getattr(self.backend, "value", self.backend))
        if backend not in BACKENDS + ("fake",):
            raise BadInput(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        object.__setattr__(self, "backend", backend)
        if self.model is not None:
            object.__setattr__(self, "model", str(self.model))
        if self.backend == "openai" and not (self.base_url or os.environ.get("OPENAI_BASE_URL")):
            raise BadInput("--backend openai needs --base-url URL (or env OPENAI_BASE_URL)")
        if self.concurrency < 1:
            raise BadInput(f"--concurrency {self.concurrency}: must be at least 1")
        parse_day(self.date)  # fail early, before any model loads

    def with_(self, **changes: object) -> LLMOptions:
        return replace(self, **changes)  # type: ignore[arg-type]

    def day(self) -> Date | None:
        """The `--date` as a date, or None when not given (the stage picks a data-derived default)."""
        return parse_day(self.date)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir or os.environ.get("RECGPT_CACHE_DIR") or DEFAULT_CACHE_DIR)

    def load_prompt(self, default: str) -> Prompt:
        """`--prompt FILE` when given, else the packaged `prompts/<default>.md`."""
        return load_prompt(self.prompt or default)

    def sampling(self, defaults: SamplingParams | None = None, *, seed: int | None = None) -> SamplingParams:
        """The stage's default sampling params with `--temperature`, `--max-tokens` and `--seed` applied."""
        d = defaults or SamplingParams()
        return SamplingParams(
            temperature=d.temperature if self.temperature is None else self.temperature,
            top_p=d.top_p,
            max_tokens=d.max_tokens if self.max_tokens is None else self.max_tokens,
            seed=d.seed if seed is None else seed,
        )
