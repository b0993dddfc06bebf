"""Build the StructuredLLM a stage uses from its command-line options: backend + cache + retry policy.

    from recgpt_cli.llm.options import LLMOptions
    from recgpt_cli.llm.factory import make_llm

    llm = make_llm(LLMOptions(backend="llama-cpp"), task="interest_mining")   # embedded GGUF + packaged adapter
    llm = make_llm(task="judge", model="my.gguf", no_cache=True)               # keyword form, same fields
    gen = llm.generate(load_prompt("interest_mining"), variables, InterestList, SamplingParams(max_tokens=300))

The cache is one DuckDB file per task, `<cache-dir>/<task>.duckdb` (default `./.recgpt-cache/`, or
$RECGPT_CACHE_DIR), never the main `--db`: stages run as concurrent processes in a pipe and DuckDB allows one
writer process per file. Without `task`, each prompt's own `task` front-matter field names the file.
Tests inject a fake with `make_llm(backend=FakeBackend(...))` or `StructuredLLM(FakeBackend(...))` directly.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.base import Backend
from recgpt_cli.llm.options import LLMOptions
from recgpt_cli.llm.structured import StructuredLLM

_OPTION_FIELDS = {f.name for f in fields(LLMOptions)}


def make_llm(
    options: LLMOptions | None = None,
    *,
    task: str | None = None,
    retries: int = 2,
    seed: int | None = None,
    backend: str | Backend | None = None,
    **overrides: Any,
) -> StructuredLLM:
    """StructuredLLM for `options` (or keyword overrides of LLMOptions fields). `seed` is accepted for call-site
    convenience and ignored: seeds travel in SamplingParams so they are part of each cache key."""
    del seed
    unknown = set(overrides) - _OPTION_FIELDS
    if unknown:
        raise TypeError(f"make_llm: unknown option(s) {sorted(unknown)}")
    instance = backend if backend is not None and not isinstance(backend, str) else None
    if isinstance(backend, str):
        overrides["backend"] = backend
    opts = (options or LLMOptions()).with_(**overrides) if overrides else (options or LLMOptions())
    if opts.backend == "llama-cpp" and opts.model is None:
        from recgpt_cli.llm.aligned import default_model

        opts = opts.with_(model=default_model(task))
    be = instance if instance is not None else make_backend(opts)
    return StructuredLLM(be, cache=make_cache(opts, task=task), retries=retries)


def make_backend(opts: LLMOptions) -> Backend:
    """The backend named by `--backend`; imports are lazy so `--help` never loads torch or llama.cpp."""
    if opts.backend == "llama-cpp":
        from recgpt_cli.llm.aligned import ADAPTER, BASE_MODEL, adapter_base
        from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend

        if not opts.model or opts.model == BASE_MODEL:
            return LlamaCppBackend(None)
        path = aligned_model(opts.model, "model.gguf")
        if path.is_dir() and (path / ADAPTER).is_file():  # an adapter without a merged model.gguf
            return LlamaCppBackend(adapter_base(path), adapter=path / ADAPTER, merged_dir=opts.resolved_cache_dir())
        return LlamaCppBackend(path)
    if opts.backend == "hf":
        if not opts.model:
            raise BadInput("--backend hf needs --model DIR (a transformers model directory)",
                           "convert the embedded model once with `python -m recgpt_cli.llm.convert OUT_DIR`")
        from recgpt_cli.llm.hf_backend import HFBackend

        return HFBackend(aligned_model(opts.model, "hf"))
    if opts.backend == "openai":
        from recgpt_cli.llm.openai_backend import OpenAIBackend

        base_url = opts.base_url or os.environ.get("OPENAI_BASE_URL") or ""
        return OpenAIBackend(base_url, model=opts.model, concurrency=opts.concurrency, timeout_s=opts.timeout,
                             retries=opts.retries)
    raise BadInput(f"--backend {opts.backend!r} cannot be built from options (the fake backend is for tests)")


def aligned_model(model: str, part: str) -> Path:
    """`--model DIR` for an `recgpt align sft` output dir means its GGUF (llama-cpp) or its hf/ dir (hf)."""
    p = Path(model)
    return p / part if p.is_dir() and (p / part).exists() and (p / "manifest.json").exists() else p


def make_cache(opts: LLMOptions, *, task: str | None = None) -> Any:
    """A DuckDB completion cache under the cache dir, or None with `--no-cache`."""
    if opts.no_cache:
        return None
    from recgpt_cli.llm.cache import DuckDBCache

    folder = opts.resolved_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--cache-dir {folder}: is a file, expected a folder", "pass a folder, or --no-cache")
    return DuckDBCache(folder, task=task)
