"""The LLM option set, declared once (STYLE §17): every LLM command (`mine-interests`, `predict-tags`, `explain`,
`judge`) and `recgpt run` take it through one decorator and receive one `LLMOptions`.

    @friendly_errors
    @llm_options()
    def mine_interests(in_arg: InArg = None, ..., llm_opts: LLMOptions = LLMOptions()) -> None:
        llm = make_llm(llm_opts, task="interest_mining")      # backend + per-task cache + timeout/retries
        tmpl = llm_opts.load_prompt("interest_mining")        # --prompt FILE or prompts/interest_mining.md
        params = llm_opts.sampling(STAGE_DEFAULTS, seed=seed)  # --temperature/--max-tokens override defaults

`llm_options(date=False)` leaves out `--date` (judge), `llm_options(prompt=False)` leaves out `--prompt` (run:
each stage has its own). `--temperature` and `--max-tokens` default to None, meaning "the stage's own
defaults"; `--date` is validated (YYYY-MM-DD) and never defaults to the wall clock (STYLE §10).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from recgpt_cli.llm.options import (
    BACKENDS,
    DEFAULT_CACHE_DIR,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    LLMOptions,
    parse_day,
)

__all__ = ["LLMOptions", "llm_options", "parse_day"]


def _check_backend(value: str) -> str:
    if value not in BACKENDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(BACKENDS)}")
    return value


# (parameter name, annotated type, default) — the whole LLM option family, in --help order.
_OPTIONS: list[tuple[str, Any, Any]] = [
    ("backend", Annotated[str, typer.Option(
        "--backend", callback=_check_backend, metavar="[llama-cpp|hf|openai]", rich_help_panel="LLM",
        help="llama-cpp (default: embedded GGUF), hf (local transformers directory), "
             "openai (any OpenAI-compatible server).")], "llama-cpp"),
    ("model", Annotated[str | None, typer.Option(
        "--model", rich_help_panel="LLM",
        help="llama-cpp: a .gguf file, an `align sft` output dir, or 'base' (the raw embedded SmolLM2-135M); "
             "default: the embedded model with recgpt's packaged alignment adapter for interests and tags, raw for "
             "the other tasks. hf: a model directory; openai: the model name sent to the server.")], None),
    ("base_url", Annotated[str | None, typer.Option(
        "--base-url", rich_help_panel="LLM",
        help="openai backend: server URL, e.g. http://127.0.0.1:8000/v1 "
             "(API key from RECGPT_API_KEY or OPENAI_API_KEY).")], None),
    ("concurrency", Annotated[int, typer.Option(
        "--concurrency", min=1, rich_help_panel="LLM",
        help="openai backend: calls in flight at once (local models run one at a time).")], 4),
    ("timeout", Annotated[float, typer.Option(
        "--timeout", min=0.1, rich_help_panel="LLM",
        help="openai backend: seconds to wait for one HTTP answer before retrying it.")], DEFAULT_TIMEOUT_S),
    ("retries", Annotated[int, typer.Option(
        "--retries", min=0, max=10, rich_help_panel="LLM",
        help="openai backend: retries of a call that timed out or got HTTP 5xx/429, with backoff; then the "
             "record is written with its `error` and the stage goes on.")], DEFAULT_RETRIES),
    ("no_cache", Annotated[bool, typer.Option(
        "--no-cache", rich_help_panel="LLM",
        help="Always call the model; do not read or write the cache (failures are never cached).")], False),
    ("cache_dir", Annotated[Path | None, typer.Option(
        "--cache-dir", rich_help_panel="LLM",
        help=f"LLM cache + call log, one DuckDB file per task (default: $RECGPT_CACHE_DIR or "
             f"./{DEFAULT_CACHE_DIR}/).")], None),
    ("prompt", Annotated[str | None, typer.Option(
        "--prompt", rich_help_panel="LLM", help="Prompt file to use instead of the packaged one.")], None),
    ("date", Annotated[str | None, typer.Option(
        "--date", rich_help_panel="LLM",
        help="Today's date shown to the LLM (YYYY-MM-DD); never the wall clock.")], None),
    ("temperature", Annotated[float | None, typer.Option(
        "--temperature", min=0.0, rich_help_panel="LLM", help="Sampling temperature (default: the stage's).")],
     None),
    ("max_tokens", Annotated[int | None, typer.Option(
        "--max-tokens", min=1, rich_help_panel="LLM",
        help="Cap on generated tokens per call (default: the stage's).")], None),
]

F = TypeVar("F", bound=Callable[..., Any])


def llm_options(*, date: bool = True, prompt: bool = True, date_help: str | None = None) -> Callable[[F], F]:
    """Decorator: add the LLM options to a Typer command and pass them as one `llm_opts: LLMOptions`.
    `date_help` replaces --date's help where a command gives the date more to do (`run`)."""
    names = [name for name, _, _ in _OPTIONS if (date or name != "date") and (prompt or name != "prompt")]
    options = [(name, Annotated[str | None, typer.Option("--date", rich_help_panel="LLM", help=date_help)]
                if name == "date" and date_help else ann, default) for name, ann, default in _OPTIONS]

    def decorate(func: F) -> F:
        sig = inspect.signature(func, eval_str=True)  # typer reads a __signature__ as it is
        if "llm_opts" not in sig.parameters:
            raise TypeError(f"{func.__name__}: an @llm_options command takes `llm_opts`")
        own = [p for p in sig.parameters.values() if p.name != "llm_opts"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
                 for name, ann, default in options if name in names]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            kwargs["llm_opts"] = LLMOptions(**values)
            return func(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        annotations = {k: v for k, v in func.__annotations__.items() if k != "llm_opts"}
        annotations.update({p.name: p.annotation for p in added})
        wrapper.__annotations__ = annotations
        return wrapper  # type: ignore[return-value]

    return decorate
