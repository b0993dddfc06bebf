"""Judge agreement with the hand-labelled gold sets (§4.3, Table 9 form), with the embedded model.

    python bench/bench_judge.py [--tasks interests,tags,explanations] [--limit N] [--model PATH.gguf]
                                [--threads N] [--json FILE]

For each task: the LLM judge alone, the LLM judge + code post-checks (recgpt_cli.judge.rules), the post-checks
alone (every criterion passes unless a rule fires), and a majority-class baseline. Positive class = the sample
passes every criterion. Low agreement is a finding, not a failure: the embedded model has 135M parameters.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recgpt_cli.judge import agreement, get_task, judge_samples, majority_baseline  # noqa: E402
from recgpt_cli.judge.rules import apply_rules  # noqa: E402
from recgpt_cli.judge.run import JudgeStats  # noqa: E402
from recgpt_cli.llm.structured import StructuredLLM  # noqa: E402

GOLD = ROOT / "sample_data" / "gold"


def make_llm(model: str | None, threads: int | None) -> StructuredLLM:
    """The project's llama.cpp backend without a cache (every call is a real model call)."""
    from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend

    return StructuredLLM(LlamaCppBackend(model, n_threads=threads), cache=None)


def load_gold(task: str, limit: int | None) -> list[dict[str, Any]]:
    rows = [orjson.loads(line) for line in (GOLD / f"{task}.jsonl").read_bytes().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def with_rules(task: str, gold: list[dict[str, Any]], judged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = get_task(task)
    by_id = {g["sample_id"]: g for g in gold}
    out = []
    for row in judged:
        if row.get("error"):
            out.append(row)
            continue
        v = dict(row["verdicts"])
        apply_rules(task, by_id[row["sample_id"]], v)
        out.append({**row, "verdicts": v, "pass": spec.sample_passes(v)})
    return out


def rules_only(task: str, gold: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = get_task(task)
    out = []
    for g in gold:
        v = {c: spec.criteria[c][1][0] for c in spec.criteria}
        apply_rules(task, g, v)
        out.append({"task": task, "sample_id": g["sample_id"], "verdicts": v, "pass": spec.sample_passes(v)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="interests,tags,explanations")
    ap.add_argument("--limit", type=int, default=None, help="first N gold samples per task")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all usable cores)")
    ap.add_argument("--json", dest="json_out", default=None, help="also write all numbers here")
    args = ap.parse_args()
    console = Console()
    llm = make_llm(args.model, args.threads)
    results: dict[str, Any] = {"model": getattr(llm.backend, "model_id", "?"), "tasks": {}}
    summary = Table(title=f"LLM judge vs gold labels (positive = sample passes), model {results['model']}")
    for col in ("task", "judge", "n", "pass rate", "gold pass", "ACC", "Precision", "Recall", "F1", "s/sample"):
        summary.add_column(col, justify="left" if col in ("task", "judge") else "right")
    crit = Table(title="per criterion: pass rate (judge) / gold pass rate / ACC / F1 / exact-label ACC (LLM + rules)")
    for col in ("task", "criterion", "judge pass", "gold pass", "ACC", "F1", "label ACC"):
        crit.add_column(col, justify="left" if col in ("task", "criterion") else "right")
    for task in args.tasks.split(","):
        spec = get_task(task)
        gold = load_gold(task, args.limit)
        stats = JudgeStats()
        t0 = time.perf_counter()
        raw = list(judge_samples(gold, llm, task, use_rules=False, stats=stats))
        secs = time.perf_counter() - t0
        variants = {"LLM": raw, "LLM + rules": with_rules(task, gold, raw), "rules only": rules_only(task, gold),
                    "majority class": majority_baseline(gold, task)}
        gold_pass = sum(spec.sample_passes(g["labels"]) for g in gold) / len(gold)
        res: dict[str, Any] = {"n": len(gold), "errors": stats.n_errors, "seconds": round(secs, 1),
                               "tokens": stats.prompt_tokens + stats.completion_tokens, "variants": {}}
        for name, rows in variants.items():
            a = agreement(rows, gold, task)
            ok = [r for r in rows if not r.get("error")]
            rate = sum(r["pass"] for r in ok) / len(ok) if ok else 0.0
            res["variants"][name] = {"pass_rate": rate, **a}
            m = a["overall"]
            summary.add_row(task, name, str(a["n"]), f"{rate:.3f}", f"{gold_pass:.3f}", f"{m['acc']:.4f}",
                            f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                            f"{secs / len(gold):.1f}" if name == "LLM" else "")
        ruled = res["variants"]["LLM + rules"]
        for c in spec.criteria:
            ok = [r for r in variants["LLM + rules"] if not r.get("error")]
            jp = sum(spec.passes(c, r["verdicts"][c]) for r in ok) / len(ok) if ok else 0.0
            gp = sum(spec.passes(c, g["labels"][c]) for g in gold) / len(gold)
            m = ruled["criteria"][c]
            crit.add_row(task, c, f"{jp:.3f}", f"{gp:.3f}", f"{m['acc']:.4f}", f"{m['f1']:.4f}",
                         f"{m['label_acc']:.4f}")
        results["tasks"][task] = res
        console.print(f"[dim]{task}: {len(gold)} samples, {stats.n_errors} judge errors, {secs:.0f}s[/]")
        if args.json_out:  # after every task, so a long run that is cut short keeps what it measured
            Path(args.json_out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    console.print(summary)
    console.print(crit)


if __name__ == "__main__":
    main()
