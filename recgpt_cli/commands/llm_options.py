"""Options shared by every LLM command (`mine-interests`, `predict-tags`, `explain`, `judge`), so all four agree.

Usage in a stage command::

    from recgpt_cli.commands.llm_options import (
        BackendOpt, BaseUrlOpt, CacheDirOpt, ConcurrencyOpt, DateOpt, LLMOptions, MaxTokensOpt, ModelOpt,
        NoCacheOpt, PromptOpt, TemperatureOpt,
    )
    from recgpt_cli.llm.factory import make_llm

    @friendly_errors
    def mine_interests(
        ...,
        backend: BackendOpt = "llama-cpp",
        model: ModelOpt = None,
        base_url: BaseUrlOpt = None,
        concurrency: ConcurrencyOpt = 4,
        no_cache: NoCacheOpt = False,
        cache_dir: CacheDirOpt = None,
        prompt: PromptOpt = None,
        date: DateOpt = None,
        temperature: TemperatureOpt = None,
        max_tokens: MaxTokensOpt = None,
        seed: SeedOpt = 0,
        quiet: QuietOpt = False,
    ) -> None:
        opts = LLMOptions(backend=backend, model=model, base_url=base_url, concurrency=concurrency,
                          no_cache=no_cache, cache_dir=cache_dir, prompt=prompt, date=date,
                          temperature=temperature, max_tokens=max_tokens)
        llm = make_llm(opts, task="interest_mining")          # backend + per-task DuckDB cache
        tmpl = opts.load_prompt("interest_mining")            # --prompt FILE or prompts/interest_mining.md
        params = opts.sampling(STAGE_DEFAULT_PARAMS, seed=seed)  # --temperature/--max-tokens override defaults
        day = opts.day()                                      # datetime.date | None (None: stage decides)

`--temperature` and `--max-tokens` default to None, meaning "the stage's own defaults". `--date` is validated
here (YYYY-MM-DD) and never defaults to the wall clock (determinism, STYLE §10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recgpt_cli.llm.options import BACKENDS, DEFAULT_CACHE_DIR, LLMOptions, parse_day

__all__ = [
    "BackendOpt", "BaseUrlOpt", "CacheDirOpt", "ConcurrencyOpt", "DateOpt", "LLMOptions", "MaxTokensOpt",
    "ModelOpt", "NoCacheOpt", "PromptOpt", "TemperatureOpt", "parse_day",
]


def _check_backend(value: str) -> str:
    if value not in BACKENDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(BACKENDS)}")
    return value


BackendOpt = Annotated[
    str,
    typer.Option("--backend", callback=_check_backend, metavar="[llama-cpp|hf|openai]",
                 help="llama-cpp (default: embedded GGUF), hf (local transformers directory), "
                      "openai (any OpenAI-compatible server)."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="llama-cpp: a .gguf file (default: embedded SmolLM2-135M); hf: a model directory; "
                                 "openai: the model name sent to the server."),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="openai backend: server URL, e.g. http://127.0.0.1:8000/v1 "
                                    "(API key from RECGPT_API_KEY or OPENAI_API_KEY)."),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, help="openai backend: requests in flight at once.")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Always call the model; do not read or write the cache.")]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help=f"LLM cache + call log, one DuckDB file per task "
                                     f"(default: $RECGPT_CACHE_DIR or ./{DEFAULT_CACHE_DIR}/)."),
]
PromptOpt = Annotated[str | None, typer.Option("--prompt", help="Prompt file to use instead of the packaged one.")]
DateOpt = Annotated[
    str | None, typer.Option("--date", help="Today's date shown to the LLM (YYYY-MM-DD); never the wall clock.")
]
TemperatureOpt = Annotated[
    float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature (default: the stage's).")
]
MaxTokensOpt = Annotated[
    int | None, typer.Option("--max-tokens", min=1, help="Cap on generated tokens per call (default: the stage's).")
]
