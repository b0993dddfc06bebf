"""Does Appendix C's curriculum teach the embedded model its shop? Held-out users' searches, base vs trained (issue 9).

    python bench/bench_curriculum.py --work DIR [--max-steps 300] [--per-task 40] [--threads 2] [--json OUT]

Training data: `align.curriculum.build_curriculum` on sample_data (leave-one-out split, default balancing) for every
user except the intent bench's 100 scored users (`bench_intent.pick_users`, as bench_align). LoRA through the
curriculum's first three stages in order (presets/curriculum/appendix-c.toml; the target stage is bench_align's),
exported to GGUF q8_0 and served by llama.cpp like the base model.
Evaluation: the same builders run on the scored users alone (their train-period searches and items; for
title_key_info the catalogue items no training sample shows); an eval sample whose prompt also occurs in training
is dropped, so every prompt is unseen; at most --per-task per subtask, chosen by hash. Greedy, schema-constrained
decoding for both models; exact match of the decisive field (case-insensitive): category, relevant, domain,
interest; token F1 for rewrites; title_key_info scores the mean of brand (exact), category (exact) and product
(token F1) — partial credit, because its exact match was 0 for both models.
Non-LLM baseline in the same table (the strongest simple one here): φ, the naive-Bayes title -> category model the
tag rules use (`fit_tag_category`, fitted on the catalogue's titles): φ(query) for query_category, "Yes" iff φ(query)
is the item's category for relevance, φ(query)'s department > section for what_to_buy, the most frequent φ(title) for
inductive_reasoning, the catalogue brand the title starts with + `title_tag` + φ(title) for title_key_info (these
rules are how its labels were made, so that row is the labels' own ceiling), the query itself for rewriting.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_intent  # noqa: E402

from recgpt_cli.align.curriculum import LEVELS, OUTPUTS, CurriculumConfig, build_curriculum, load_order  # noqa: E402
from recgpt_cli.align.samples import Sample  # noqa: E402
from recgpt_cli.align.sft import SFTConfig, train_sft  # noqa: E402
from recgpt_cli.llm.base import SamplingParams  # noqa: E402
from recgpt_cli.llm.factory import make_llm  # noqa: E402
from recgpt_cli.llm.options import LLMOptions  # noqa: E402
from recgpt_cli.llm.structured import output_schema, parse_json_output  # noqa: E402

FIELDS = {"query_category": ("category",), "query_item_relevance": ("relevant",), "what_to_buy": ("domain",),
          "inductive_reasoning": ("interest",), "title_key_info": (), "query_rewriting": ()}


def _key(s: Sample) -> str:
    return hashlib.sha256(s.hash.encode()).hexdigest()


def heldout(con: Any, scored: list[str], train: list[Sample], per_task: int) -> dict[str, list[Sample]]:
    """Samples from the scored users only, prompts never seen in training, at most `per_task` each."""
    others = [u for (u,) in con.execute("SELECT user_id FROM users").fetchall() if u not in set(scored)]
    built, _ = build_curriculum(con, ["curriculum"], CurriculumConfig(max_per_category=10**6), exclude=others)
    seen = {json.dumps(s.messages) for s in train}
    out: dict[str, list[Sample]] = {}
    for task in FIELDS:
        fresh = [s for s in built if s.task == task and json.dumps(s.messages) not in seen]
        out[task] = sorted(fresh, key=_key)[:per_task]
    return out


def _f1(a: str, b: str) -> float:
    x, y = a.lower().split(), b.lower().split()
    common = sum(min(x.count(w), y.count(w)) for w in set(x))
    return 0.0 if not common else 2 * common / (len(x) + len(y))


def field_score(task: str, got: dict[str, Any], want: dict[str, Any]) -> float:
    """One answer's score: exact match of the decisive field, token F1 for rewrites, partial credit for titles."""
    if task == "query_rewriting":
        return _f1(got["rewrite"], want["rewrite"])
    if task == "title_key_info":
        same = [str(got[f]).strip().lower() == str(want[f]).lower() for f in ("brand", "category")]
        return (sum(same) + _f1(got["product"], want["product"])) / 3
    return float(all(str(got[f]).strip().lower() == str(want[f]).lower() for f in FIELDS[task]))


def _user_text(s: Sample, label: str) -> str:
    """The value of `label: ...` in the sample's user message."""
    for line in s.messages[-1]["content"].splitlines():
        if line.startswith(label + ": "):
            return line[len(label) + 2:]
    raise ValueError(f"{label!r} not in a {s.task} prompt")


def phi_baseline(con: Any, evalset: dict[str, list[Sample]]) -> dict[str, dict[str, float]]:
    """The non-LLM rows: φ and the catalogue (see the module docstring)."""
    from collections import Counter

    from recgpt_cli.align.data import title_tag
    from recgpt_cli.explain import read_items
    from recgpt_cli.tag_category import fit_tag_category

    phi, _ = fit_tag_category(con, holdout=0.0)
    items = read_items(con)
    domain = {it.leaf: it.domain for it in items.values() if it.leaf}
    brands = sorted({it.brand for it in items.values() if it.brand}, key=len, reverse=True)

    def leaf(text: str) -> str:
        return phi.predict_leaf([text])[0]

    rows: dict[str, dict[str, float]] = {}
    for task, samples in evalset.items():
        total = 0.0
        for s in samples:
            want = json.loads(s.target)
            if task == "query_category":
                got = {"category": leaf(_user_text(s, "Search Query"))}
            elif task == "query_item_relevance":
                item = items[s.meta["item_id"]]
                got = {"relevant": "Yes" if leaf(_user_text(s, "Search Query")) == item.leaf else "No"}
            elif task == "what_to_buy":
                got = {"domain": domain.get(leaf(_user_text(s, "Search Query")), "")}
            elif task == "inductive_reasoning":
                titles = [line[2:] for line in s.messages[-1]["content"].splitlines() if line.startswith("- ")]
                got = {"interest": Counter(leaf(t) for t in titles).most_common(1)[0][0].lower()}
            elif task == "title_key_info":
                title = _user_text(s, "Item Title")
                brand = next((b for b in brands if title.lower().startswith(b.lower())), None)
                got = {"brand": brand or "none", "product": title_tag(title, brand), "category": leaf(title)}
            else:
                got = {"rewrite": _user_text(s, "Search Query")}
            total += field_score(task, got, want)
        rows[task] = {"n": len(samples), "score": round(total / len(samples), 3) if samples else float("nan"),
                      "invalid": 0}
    return rows


def score(model: str | None, evalset: dict[str, list[Sample]]) -> dict[str, dict[str, float]]:
    llm = make_llm(LLMOptions(model=model, no_cache=True), task="curriculum_bench")
    params = SamplingParams(max_tokens=64)
    rows: dict[str, dict[str, float]] = {}
    for task, samples in evalset.items():
        out_model = OUTPUTS[task]
        schema = output_schema(out_model)
        hits, invalid, t0 = 0.0, 0, time.perf_counter()
        for s in samples:
            want = json.loads(s.target)
            try:
                got = out_model.model_validate(parse_json_output(llm.backend.complete(s.messages, schema,
                                                                                      params).text)).model_dump()
            except ValueError:
                invalid += 1
                continue
            hits += field_score(task, got, want)
        n = len(samples)
        rows[task] = {"n": n, "score": round(hits / n, 3) if n else float("nan"), "invalid": invalid,
                      "s_per_sample": round((time.perf_counter() - t0) / max(n, 1), 2)}
        print(json.dumps({"model": model or "base", "task": task, **rows[task]}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--per-task", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("RECGPT_THREADS", str(args.threads))
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    con, scored = bench_intent.scored_store("sample_data", work)
    t0 = time.perf_counter()
    train, counts = build_curriculum(con, ["curriculum"], CurriculumConfig(protocol=bench_intent.PROTOCOL),
                                     exclude=scored)
    evalset = heldout(con, scored, train, args.per_task)
    baseline = phi_baseline(con, evalset)
    con.close()
    print(json.dumps({"train": counts, "eval": {t: len(v) for t, v in evalset.items()},
                      "build_s": round(time.perf_counter() - t0, 1)}), flush=True)
    stages = [list(st.tasks) for st in load_order("appendix-c") if set(st.tasks) <= set(OUTPUTS)]
    assert [t for g in stages for t in g] == [t for level in LEVELS.values() for t in level]
    cfg = SFTConfig(batch_size=args.batch_size, max_length=320, threads=args.threads, save_every=25,
                    max_steps=args.max_steps, stages=stages)
    r = train_sft(train, work / "model", cfg, progress=lambda e: e["step"] % 25 == 0 and print(json.dumps(e),
                                                                                               flush=True))
    trained = {"steps": r.steps, "samples": r.samples, "train_s": round(r.train_s, 1),
               "tokens_per_s": round(r.tokens_per_s, 1), "peak_memory_mb": round(r.peak_memory_mb),
               "first_loss": r.first_loss, "last_loss": r.last_loss}
    print(json.dumps(trained), flush=True)
    result = {"train": trained, "phi": baseline, "base": score(None, evalset),
              "curriculum": score(str(work / "model"), evalset)}
    print("| subtask | held-out n | φ + catalogue (non-LLM) | base LLM | after curriculum | invalid (base / trained) |")
    print("|---|---:|---:|---:|---:|---:|")
    for task in FIELDS:
        b, c, p = result["base"][task], result["curriculum"][task], result["phi"][task]
        print(f"| {task} | {b['n']} | {p['score']:.3f} | {b['score']:.3f} | {c['score']:.3f} | "
              f"{b['invalid']} / {c['invalid']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
