"""Judge agreement with held-out labels (§4.3, Table 9 form): the base model, a trained judge, and baselines.

    python bench/bench_judge.py [--tasks interests,tags,explanations] [--limit N] [--model PATH.gguf]
                                [--trained DIR] [--head DIR] [--no-base] [--heldout DIR] [--heldout-limit N]
                                [--sets gold,derived,hand] [--threads N] [--json FILE]

For each task and label set: always-pass, the code post-checks alone (every criterion passes unless a rule fires,
recgpt_cli.judge.rules), the base LLM judge, base + rules, and with `--trained DIR` (a judge trained with
`recgpt align sft --task judge`) the trained judge and trained + rules; with `--head DIR` (heads trained with
`recgpt judge train --out DIR`) the head judge and head + rules. Label sets: the hand gold set
(sample_data/gold, the final test set) and, with `--heldout DIR`, the held-out users' derived labels
(`DIR/judge-heldout-<task>.jsonl` written by `recgpt align data --source labels`) and the held-out users' hand
labels (`DIR/judge-heldout-hand-<task>.jsonl`, written by bench_judge_train.py --hand), each reported separately.
`--sets derived,hand` leaves the gold set out: choose a recipe on the held-out sets, then look at gold once.
Positive class = the sample passes every criterion.
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

from recgpt_cli.judge import agreement, get_task, judge_samples  # noqa: E402
from recgpt_cli.judge.head import judge_with_head, load_head_dir  # noqa: E402
from recgpt_cli.judge.rules import apply_rules, rules_only  # noqa: E402
from recgpt_cli.judge.run import JudgeStats  # noqa: E402
from recgpt_cli.llm.structured import StructuredLLM  # noqa: E402

GOLD = ROOT / "sample_data" / "gold"


def make_llm(model: str | None, threads: int | None) -> StructuredLLM:
    """The project's llama.cpp backend without a cache (every call is a real model call). `model` may be a GGUF
    or an aligned model dir (its model.gguf)."""
    from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend

    if model and Path(model).is_dir():
        model = str(Path(model) / "model.gguf")
    return StructuredLLM(LlamaCppBackend(model, n_threads=threads), cache=None)


def always_pass(task: str, gold: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = get_task(task)
    v = {c: spec.criteria[c][1][0] for c in spec.criteria}
    return [{"task": task, "sample_id": g["sample_id"], "verdicts": dict(v), "pass": True} for g in gold]


def load_gold(task: str, limit: int | None, path: Path | None = None) -> list[dict[str, Any]]:
    path = path or GOLD / f"{task}.jsonl"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    if limit and len(rows) > limit:  # an even spread, so a cut keeps every kind of sample
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit)]
    return rows


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="interests,tags,explanations")
    ap.add_argument("--limit", type=int, default=None, help="first N gold samples per task")
    ap.add_argument("--model", default=None, help="base judge GGUF (default: the embedded model)")
    ap.add_argument("--trained", default=None, help="a trained judge: aligned model dir or GGUF")
    ap.add_argument("--head", default=None, help="a trained head dir (`recgpt judge train --out DIR`)")
    ap.add_argument("--heldout", default=None, help="dir with judge-heldout-<task>.jsonl (derived labels)")
    ap.add_argument("--heldout-limit", type=int, default=40, help="held-out samples per task (evenly spread)")
    ap.add_argument("--sets", default="gold,derived,hand", help="label sets to score (derived/hand need --heldout)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all usable cores)")
    ap.add_argument("--no-base", action="store_true", help="skip the base LLM judge (its rows are in bench/README.md; "
                    "it passes everything) to halve a trained judge's run")
    ap.add_argument("--json", dest="json_out", default=None, help="also write all numbers here")
    args = ap.parse_args()
    console = Console()
    unknown = sorted(set(args.tasks.split(",")) - {"interests", "tags", "explanations"})
    if unknown:
        ap.error(f"--tasks: unknown task(s) {', '.join(unknown)}; choose from interests, tags, explanations")
    if args.no_base and not (args.trained or args.head):
        ap.error("--no-base needs --trained or --head: nothing would be judged")
    head_dir = load_head_dir(args.head) if args.head else None
    judges = {} if args.no_base else {"base": make_llm(args.model, args.threads)}
    if args.trained:
        judges["trained"] = make_llm(args.trained, args.threads)
    results: dict[str, Any] = {"model": None if args.no_base else getattr(judges["base"].backend, "model_id", "?"),
                               "trained": args.trained, "head": args.head, "sets": {}}
    summary = Table(title="LLM judge vs held-out labels (positive = sample passes every criterion)")
    for col in ("labels", "task", "judge", "n", "pass rate", "gold pass", "ACC", "Precision", "Recall", "F1",
                "s/sample"):
        summary.add_column(col, justify="left" if col in ("labels", "task", "judge") else "right")
    crit = Table(title="per criterion (best LLM judge + rules): judge pass / gold pass / ACC / F1 / exact-label ACC")
    for col in ("labels", "task", "criterion", "judge pass", "gold pass", "ACC", "F1", "label ACC"):
        crit.add_column(col, justify="left" if col in ("labels", "task", "criterion") else "right")
    wanted = set(args.sets.split(","))
    if unknown := wanted - {"gold", "derived", "hand"}:
        ap.error(f"--sets: unknown set(s) {', '.join(sorted(unknown))}")
    sets: list[tuple[str, str | None, int | None]] = [("gold (hand)", None, args.limit)] if "gold" in wanted else []
    if args.heldout:
        sets += [(name, prefix, args.heldout_limit) for key, name, prefix in
                 (("derived", "derived held-out", ""), ("hand", "hand held-out", "hand-")) if key in wanted]
    for set_name, prefix, limit in sets:
        results["sets"][set_name] = {}
        for task in args.tasks.split(","):
            spec = get_task(task)
            path = None if prefix is None else Path(args.heldout) / f"judge-heldout-{prefix}{task}.jsonl"
            if path is not None and not path.exists():
                continue
            gold = load_gold(task, limit, path)
            variants: dict[str, list[dict[str, Any]]] = {"always pass": always_pass(task, gold),
                                                         "rules only": rules_only(task, gold)}
            res: dict[str, Any] = {"n": len(gold), "variants": {}, "seconds": {}}
            for name, llm in judges.items():
                stats = JudgeStats()
                t0 = time.perf_counter()
                raw = list(judge_samples(gold, llm, task, use_rules=False, stats=stats))
                res["seconds"][name] = round(time.perf_counter() - t0, 1)
                res[f"errors_{name}"] = stats.n_errors
                variants[name] = raw
                variants[f"{name} + rules"] = with_rules(task, gold, raw)
            if head_dir is not None:
                head_dir.refuse_training_samples(gold, task, f"{set_name} {task} labels")
                t0 = time.perf_counter()
                raw = list(judge_with_head(gold, head_dir, task, use_rules=False))
                res["seconds"]["head"] = round(time.perf_counter() - t0, 1)
                variants["head"] = raw
                variants["head + rules"] = with_rules(task, gold, raw)
            gold_pass = sum(spec.sample_passes(g["labels"]) for g in gold) / len(gold)
            for name, rows in variants.items():
                a = agreement(rows, gold, task)
                ok = [r for r in rows if not r.get("error")]
                rate = sum(r["pass"] for r in ok) / len(ok) if ok else 0.0
                res["variants"][name] = {"pass_rate": rate, **a}
                m = a["overall"]
                secs = res["seconds"].get(name)
                summary.add_row(set_name, task, name, str(a["n"]), f"{rate:.3f}", f"{gold_pass:.3f}",
                                f"{m['acc']:.4f}", f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                                f"{secs / len(gold):.1f}" if secs else "")
            best = ("head + rules" if head_dir is not None else "trained + rules" if "trained" in judges
                    else "base + rules")
            for c in spec.criteria:
                ok = [r for r in variants[best] if not r.get("error")]
                jp = sum(spec.passes(c, r["verdicts"][c]) for r in ok) / len(ok) if ok else 0.0
                gp = sum(spec.passes(c, g["labels"][c]) for g in gold) / len(gold)
                m = res["variants"][best]["criteria"][c]
                crit.add_row(set_name, task, c, f"{jp:.3f}", f"{gp:.3f}", f"{m['acc']:.4f}", f"{m['f1']:.4f}",
                             f"{m['label_acc']:.4f}")
            results["sets"][set_name][task] = res
            console.print(f"[dim]{set_name} / {task}: {len(gold)} samples, {res['seconds']}s[/]")
            if args.json_out:  # after every task, so a long run that is cut short keeps what it measured
                Path(args.json_out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    console.print(summary)
    console.print(crit)


if __name__ == "__main__":
    main()
