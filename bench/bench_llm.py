"""LLM layer overhead: tok/s through StructuredLLM (our path) vs raw llama_cpp on the same prompts, and the
cache-hit rerun speed-up. Goals (issue 3): ours >= 80% of raw tok/s; rerun >= 50x faster.

    python bench/bench_llm.py [--users 3] [--max-tokens 160] [--threads N]

Prompts are the packaged interest-mining and tag-prediction prompts filled with small hand-written users.
Raw and ours alternate (order flipped every prompt) and share one loaded model, so machine load hits both
alike; the model's KV prefix is reset before every call so neither path reuses the other's prompt evaluation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recgpt_cli.llm.base import SamplingParams  # noqa: E402
from recgpt_cli.llm.cache import DuckDBCache  # noqa: E402
from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend  # noqa: E402
from recgpt_cli.llm.prompts import Prompt, load_prompt  # noqa: E402
from recgpt_cli.llm.structured import StructuredLLM, output_schema  # noqa: E402


class Interest(BaseModel):
    id: str = Field(max_length=4)
    interest: str = Field(max_length=40)
    stage: str = Field(pattern="^(long-term|short-term)$")
    reason: str = Field(max_length=120)


class InterestList(BaseModel):
    interests: list[Interest] = Field(max_length=3)


class Tag(BaseModel):
    tag: str = Field(max_length=40)
    interest: str = Field(max_length=4)
    reason: str = Field(max_length=120)


class TagList(BaseModel):
    tags: list[Tag] = Field(max_length=3)


USERS = [
    ("age 34, female, Hangzhou", "2025-06-02 (purchase) | tennis racket; 2025-06-10 (click) | tennis balls, grip tape; "
     "2025-06-20 (search) | running shoes women; 2025-06-25 (cart) | yoga mat"),
    ("age 52, male, Chengdu", "2025-05-11 (purchase) | green tea 250g; 2025-05-30 (detail_view) | clay teapot; "
     "2025-06-14 (favorite) | fishing rod carbon; 2025-06-18 (click) | fishing reel, bait box"),
    ("age 27, female, Shanghai", "2025-04-03 (purchase) | baby stroller; 2025-05-08 (click) | baby bottle set; "
     "2025-06-01 (cart) | toddler sandals; 2025-06-22 (search) | sunscreen kids"),
    ("age 41, male, Beijing", "2025-03-19 (purchase) | mechanical keyboard; 2025-05-02 (click) | gaming mouse; "
     "2025-06-09 (detail_view) | 27 inch monitor; 2025-06-21 (favorite) | desk lamp"),
]


def workload(n_users: int) -> list[tuple[Prompt, dict[str, object], type[BaseModel]]]:
    mining, tags = load_prompt("interest_mining"), load_prompt("tag_prediction")
    base = {"date": "2025-07-01", "season": "summer", "interest_pool": "(none)", "max_interests": 3, "n_tags": 3,
            "first_id": "I1", "interest_ids": '["I1", "I2"]', "recent_items": "tennis racket"}
    out: list[tuple[Prompt, dict[str, object], type[BaseModel]]] = []
    for attrs, history in USERS[:n_users]:
        v = {**base, "attributes": attrs, "compressed": history, "behaviors": history,
             "interests": '[{"id": "I1", "interest": "tennis"}]'}
        out += [(mining, fill(mining, v), InterestList), (tags, fill(tags, v), TagList)]
    return out


def fill(prompt: Prompt, v: dict[str, object]) -> dict[str, object]:
    return {k: v.get(k, "(none)") for k in prompt.placeholders}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    console = Console(width=150)
    backend = LlamaCppBackend(n_ctx=2048, n_threads=args.threads)
    raw = backend.llm  # the same loaded model serves both paths
    work = workload(args.users)
    params = SamplingParams(max_tokens=args.max_tokens)
    cache_dir = Path(tempfile.mkdtemp(prefix="bench_llm_"))
    llm = StructuredLLM(backend, cache=DuckDBCache(cache_dir), retries=0)
    llm.generate(*work[0][:3], params)  # warm-up: page in weights, build the first grammar
    llm = StructuredLLM(backend, cache=DuckDBCache(cache_dir / "run"), retries=0)
    t_raw = t_ours = 0.0
    tok_raw = tok_ours = ok_raw = ok_ours = 0
    for i, (prompt, variables, model) in enumerate(work):
        messages, schema = prompt.render(variables), output_schema(model)
        for path in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
            raw.reset()  # no KV-prefix reuse from the previous call: both paths evaluate the full prompt
            t0 = time.perf_counter()
            if path == "raw":
                out = raw.create_chat_completion(messages, response_format={"type": "json_object", "schema": schema},
                                                 max_tokens=args.max_tokens, temperature=0.0, top_p=1.0, seed=0)
                t_raw += time.perf_counter() - t0
                tok_raw += out["usage"]["completion_tokens"]
                ok_raw += _valid(model, out["choices"][0]["message"]["content"])
            else:
                gen = llm.generate(prompt, variables, model, params)
                t_ours += time.perf_counter() - t0
                tok_ours += gen.completion_tokens
                ok_ours += gen.ok
    t0 = time.perf_counter()
    hits = [llm.generate(p, v, m, params) for p, v, m in work]
    t_hit = time.perf_counter() - t0
    assert all(g.cached for g in hits), "rerun missed the cache"

    n = len(work)
    table = Table(title=f"LLM layer: {n} prompts (interest mining + tag prediction), embedded SmolLM2-135M Q4_1, "
                        f"{backend.n_threads} threads, max_tokens {args.max_tokens}")
    for col in ("path", "seconds", "generated tokens", "tok/s", "schema-valid", "vs raw"):
        table.add_column(col, justify="right" if col != "path" else "left")
    r_raw, r_ours = tok_raw / t_raw, tok_ours / t_ours
    table.add_row("raw llama_cpp create_chat_completion", f"{t_raw:.2f}", str(tok_raw), f"{r_raw:.1f}",
                  f"{ok_raw}/{n}", "1.00")
    table.add_row("StructuredLLM + DuckDB cache (miss)", f"{t_ours:.2f}", str(tok_ours), f"{r_ours:.1f}",
                  f"{ok_ours}/{n}", f"{r_ours / r_raw:.2f} (goal >= 0.80)")
    table.add_row("StructuredLLM rerun (all cache hits)", f"{t_hit:.4f}", "0", "-", f"{sum(g.ok for g in hits)}/{n}",
                  f"{t_ours / t_hit:.0f}x faster than miss (goal >= 50x)")
    console.print(table)


def _valid(model: type[BaseModel], text: str) -> bool:
    try:
        model.model_validate_json(text)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    main()
