"""llama.cpp backend (default): any GGUF, JSON constrained by a grammar built from the output schema (issue 3).

Loads lazily (first call), once per process. Uses the GGUF's own chat template; a base model without one
(e.g. a gemma-3 base GGUF) gets a plain "system / user / JSON:" completion prompt instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from recgpt_cli.errors import RecgptError
from recgpt_cli.llm.base import BackendError, Completion, Message, SamplingParams
from recgpt_cli.llm.embedded import check_gguf, embedded_model_path
from recgpt_cli.llm.fingerprint import file_sha256

_LOAD_LOCK = threading.Lock()


def built_with_amx() -> bool:
    """Whether the installed llama.cpp carries its AMX kernels (built with -march=native on an AMX Xeon)."""
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def load_llama(**kwargs: Any) -> Any:
    """`llama_cpp.Llama(**kwargs)`, with llama.cpp's extra CPU buffer types (AMX, repacked weights) off when the
    library has AMX kernels: on some AMX Xeons (Sapphire Rapids VMs among them) the first decode through them
    segfaults (ggml-org/llama.cpp#20824; seen here with llama-cpp-python 0.3.36 and the embedded Q4_1 model).
    llama-cpp-python has no option for `use_extra_bufts`, so its model-params factory is wrapped for this load."""
    import llama_cpp
    import llama_cpp.llama as llama_module

    if not built_with_amx() or not hasattr(llama_cpp.llama_model_params, "use_extra_bufts"):
        return llama_cpp.Llama(**kwargs)
    with _LOAD_LOCK:
        factory = llama_module.llama_cpp.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = factory()
            params.use_extra_bufts = False
            return params

        llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
        try:
            return llama_cpp.Llama(**kwargs)
        finally:
            llama_module.llama_cpp.llama_model_default_params = factory


def asked_threads() -> int | None:
    """$RECGPT_THREADS when it is a positive integer, else None."""
    env = os.environ.get("RECGPT_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def default_threads() -> int:
    """$RECGPT_THREADS, else the cores this process may use minus one (at least 1).

    One core is left free because pipe stages run side by side and llama.cpp's threads spin-wait: on a busy
    2-core machine 2 threads measured 4-10x slower than 1 (bench/bench_llm.py)."""
    asked = asked_threads()
    if asked is not None:
        return asked
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class LlamaCppBackend:
    """Backend over `llama_cpp.Llama`. `model_path=None` means the embedded SmolLM2-135M-Instruct GGUF."""

    name = "llama-cpp"
    concurrency = 1  # one Llama context is not thread-safe

    def __init__(self, model_path: Path | str | None = None, *, adapter: Path | str | None = None,
                 merged_dir: Path | str = ".recgpt-cache", n_ctx: int = 4096, n_threads: int | None = None) -> None:
        self.model_path = Path(model_path) if model_path is not None else embedded_model_path()
        check_gguf(self.model_path)
        # A LoRA adapter GGUF is merged into the base once (`merged_dir`), not applied per call: on this 135M
        # model llama.cpp's run-time LoRA measured ~1.5x slower (more graph nodes per layer than work).
        self.adapter = Path(adapter) if adapter is not None else None
        if self.adapter is not None:
            check_gguf(self.adapter)
        self.merged_dir = Path(merged_dir)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        # Prompt evaluation: llama.cpp's default is every core, which is fastest for one process alone (4 users:
        # 63 s vs 78 s with 1 thread, 2 cores); a thread count that was asked for ($RECGPT_THREADS, say one per
        # shard worker) bounds it too: two 1-thread workers took 56 s where two default ones took 65 s.
        self.n_threads_batch = self.n_threads if n_threads or asked_threads() is not None else None
        self._llm: Any = None
        self._model_id: str | None = None
        self._has_template = True
        self._grammars: dict[bytes, Any] = {}
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = file_sha256(self.model_path)
            if self.adapter is not None:
                self._model_id = hashlib.sha256(f"{self._model_id}+lora:{file_sha256(self.adapter)}".encode()
                                                ).hexdigest()
        return self._model_id

    def served_path(self) -> Path:
        """The GGUF llama.cpp loads: the model itself, or base + adapter merged (once, cached by model id)."""
        if self.adapter is None:
            return self.model_path
        merged = self.merged_dir / f"merged-{self.model_id[:16]}.gguf"
        if not merged.is_file():
            from recgpt_cli.align.gguf_export import merge_lora_gguf

            merge_lora_gguf(self.model_path, self.adapter, merged)
        return merged

    @property
    def llm(self) -> Any:
        """The loaded `llama_cpp.Llama` (loaded on first use)."""
        if self._llm is None:
            try:
                import llama_cpp  # noqa: F401
            except ImportError as exc:
                raise RecgptError("llama-cpp-python is not installed", "pip install llama-cpp-python") from exc
            try:
                self._llm = load_llama(model_path=str(self.served_path()), n_ctx=self.n_ctx,
                                       n_threads=self.n_threads, n_threads_batch=self.n_threads_batch, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise RecgptError(f"{self.model_path}: cannot load GGUF model: {exc}") from exc
            self._has_template = bool(self._llm.metadata.get("tokenizer.chat_template"))
        return self._llm

    def complete(self, messages: list[Message], schema: dict[str, Any] | None, params: SamplingParams) -> Completion:
        with self._lock:
            return self._complete(messages, schema, params)

    def _complete(self, messages: list[Message], schema: dict[str, Any] | None, params: SamplingParams) -> Completion:
        llm = self.llm
        grammar = self._grammar(schema)
        text_prompt = None if self._has_template else plain_prompt(messages, json_output=schema is not None)
        n_prompt = len(llm.tokenize((text_prompt or _joined(messages)).encode(), add_bos=True, special=True))
        # Tiny models can loop until the context is full: never ask for more than fits.
        room = self.n_ctx - n_prompt - 8 * len(messages)
        if room < 16:
            raise BackendError(f"prompt of ~{n_prompt} tokens does not fit the {self.n_ctx}-token context")
        max_tokens = min(params.max_tokens, room)
        sampling = dict(temperature=params.temperature, top_p=params.top_p, seed=params.seed, max_tokens=max_tokens,
                        grammar=grammar)
        t0 = time.perf_counter()
        try:
            if text_prompt is None:
                out = llm.create_chat_completion(messages=messages, **sampling)
                choice = out["choices"][0]
                text = choice["message"]["content"] or ""
            else:
                out = llm.create_completion(text_prompt, **sampling)
                choice = out["choices"][0]
                text = choice["text"]
        except ValueError as exc:  # "Requested tokens exceed context window"
            raise BackendError(str(exc)) from exc
        usage = out.get("usage") or {}
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=time.perf_counter() - t0,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def _grammar(self, schema: dict[str, Any] | None) -> Any:
        """GBNF grammar for the schema, built once per schema (conversion costs more than a short reply)."""
        if schema is None:
            return None
        from llama_cpp import LlamaGrammar

        # Not sorted: property order in the schema is the order the model writes the keys in.
        k = orjson.dumps(schema)
        if k not in self._grammars:
            try:
                self._grammars[k] = LlamaGrammar.from_json_schema(k.decode(), verbose=False)
            except Exception as exc:  # noqa: BLE001 - the converter raises bare Exceptions
                raise RecgptError(f"output schema not supported by llama.cpp's grammar converter: {exc}") from exc
        return self._grammars[k]


def plain_prompt(messages: list[Message], *, json_output: bool) -> str:
    """Completion-style prompt for base models without a chat template."""
    parts = [m["content"].strip() for m in messages if m["role"] == "system"]
    parts += [m["content"].strip() for m in messages if m["role"] != "system"]
    return "\n\n".join(parts) + ("\n\nAnswer (JSON):\n" if json_output else "\n\nAnswer:\n")


def _joined(messages: list[Message]) -> str:
    return "\n".join(m["content"] for m in messages)
