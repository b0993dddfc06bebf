"""LLMOptions: the parsed LLM settings of one command (`--backend`, `--model`, ... see commands/llm_options.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from datetime import date as Date
from pathlib import Path

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.base import SamplingParams
from recgpt_cli.llm.prompts import Prompt, load_prompt

BACKENDS = ("llama-cpp", "hf", "openai")  # "fake" exists for tests only, never on the CLI
DEFAULT_CACHE_DIR = ".recgpt-cache"
DEFAULT_TIMEOUT_S = 60.0  # one HTTP answer (openai backend); a hung server costs (retries + 1) x this per call
DEFAULT_RETRIES = 2  # transient HTTP failures (timeout, 5xx, 429) retried with backoff, then the record fails


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
    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
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
        if self.timeout <= 0:
            raise BadInput(f"--timeout {self.timeout}: must be more than 0 seconds")
        if self.retries < 0:
            raise BadInput(f"--retries {self.retries}: must be 0 or more")
        parse_day(self.date)  # fail early, before any model loads

    def with_(self, **changes: object) -> LLMOptions:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_args(self, *, date: bool = True, prompt: bool = True) -> list[str]:
        """These options as CLI arguments (defaults left out), for `recgpt run` to hand each LLM stage."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default or (f.name == "date" and not date) or (f.name == "prompt" and not prompt):
                continue
            flag = "--" + f.name.replace("_", "-")
            args += [flag] if isinstance(value, bool) else [flag, str(value)]
        return args

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
