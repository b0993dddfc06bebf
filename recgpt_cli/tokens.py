"""Token counting with the target model's own tokenizer (§2.1.1: the budget is the LLM's context window).

The embedded GGUF is opened with `vocab_only=True`, which loads the vocabulary and merges but no weights, so it
takes well under a second; one instance per GGUF path is cached for the life of the process.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recgpt_cli.errors import BadInput, RecgptError

TokenCounter = Callable[[list[str]], list[int]]


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise RecgptError("llama-cpp-python is needed to count tokens", "run `make setup`") from exc
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{p}: is a directory, expected a .gguf model file", "pass a .gguf model file with --tokenizer")
    if not p.is_file():
        raise BadInput(f"{p}: no such tokenizer file", "pass a .gguf model file with --tokenizer")
    # llama.cpp logs a context-size warning through a Python callback on sys.stderr even with verbose=False.
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return Llama(model_path=str(p), vocab_only=True, verbose=False, n_ctx=16)
        except (ValueError, RuntimeError) as exc:
            raise BadInput(f"{p}: cannot load a tokenizer from this file ({exc})", "pass a .gguf model file") from None


def tokenizer_path(path: str | Path | None = None) -> Path:
    """The GGUF whose tokenizer counts tokens: `path` if given, else the embedded model."""
    if path is not None:
        return Path(path)
    from recgpt_cli.llm.embedded import embedded_model_path

    return embedded_model_path()


def _counter(llm: Any) -> Callable[[bytes], int]:
    """Count without materialising tokens: llama_tokenize into a 0-length buffer returns -(token count) after one
    pass. (Llama.tokenize sizes its buffer by n_ctx_train, which is 0 for a vocab-only load, so it always
    tokenizes twice.) Falls back to Llama.tokenize if the low-level handle is not where this version keeps it."""
    import llama_cpp

    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    if vocab is None:
        return lambda b: len(llm.tokenize(b, add_bos=False, special=False))
    return lambda b: -llama_cpp.llama_tokenize(vocab, b, len(b), None, 0, False, False) if b else 0


def count_tokens(texts: Sequence[str], tokenizer: str | Path | None = None) -> list[int]:
    """Number of tokens of each text under `tokenizer` (a GGUF path; default the embedded model), no BOS token."""
    count = _count_fn(str(tokenizer_path(tokenizer)))
    return [count(t.encode("utf-8")) for t in texts]


@functools.lru_cache(maxsize=4)
def _count_fn(path: str) -> Callable[[bytes], int]:
    return _counter(_load(path))


def token_counter(tokenizer: str | Path | None = None) -> TokenCounter:
    """A `count_tokens` bound to one tokenizer, loaded now so a bad path fails before any work starts."""
    path = str(tokenizer_path(tokenizer))
    _load(path)
    return functools.partial(count_tokens, tokenizer=path)
