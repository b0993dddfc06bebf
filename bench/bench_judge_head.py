"""How the judge heads' recipe was chosen: user-grouped cross-validation on hand labels (never the gold set).

    python bench/bench_judge_head.py [--hand sample_data/judge_train] [--layers 6,12,18,24,30]
                                     [--weight-decays 0.001,0.01,0.1] [--folds 8] [--json FILE]

For each task, the hand labels' users are split into `--folds` groups (a hash of the user id); heads are fitted
with `recgpt_cli.judge.head` on the other groups and scored on each held-out group, for every layer, feature kind
(the last token's state, the token mean, both side by side) and weight decay, plus the AND of per-criterion heads
for the kept setting. Printed: agreement on the sample's pass (ACC, alone and with the rules) and AUC; the
always-pass and rules-only rows on the same labels. One forward pass per sample reads every layer at once.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recgpt_cli.judge.criteria import get_task  # noqa: E402
from recgpt_cli.judge.head import DEFAULT_LAYER, DEFAULT_WEIGHT_DECAY, FeatureModel, fit_linear  # noqa: E402
from recgpt_cli.judge.rules import rules_only  # noqa: E402

TASKS = ("interests", "tags", "explanations")


def auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def fold_of(user_id: str, folds: int) -> int:
    return int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % folds


def all_layers(fm: FeatureModel, samples: list[dict[str, Any]], task: str) -> dict[str, np.ndarray]:
    """{"last": [n, layers+1, d], "mean": [n, layers+1, d]} from one forward pass per sample."""
    import torch

    last, mean = [], []
    with torch.inference_mode():
        for s in samples:
            ids = fm.tok(fm.text(s, task), return_tensors="pt").input_ids
            hs = fm.model(ids, output_hidden_states=True).hidden_states
            last.append(torch.stack([h[0, -1] for h in hs]).numpy())
            mean.append(torch.stack([h[0].mean(dim=0) for h in hs]).numpy())
    return {"last": np.stack(last), "mean": np.stack(mean)}


def features(h: dict[str, np.ndarray], kind: str, layer: int) -> np.ndarray:
    if kind == "both":  # what recgpt_cli.judge.head.FeatureModel reads
        return np.concatenate([h["last"][:, layer], h["mean"][:, layer]], axis=1)
    return h[kind][:, layer]


def cv_proba(x: np.ndarray, y: list[str], folds: np.ndarray, wd: float, positive: str) -> np.ndarray:
    """Out-of-fold P(positive) for every row."""
    p = np.zeros(len(y))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        head = fit_linear(x[tr], [v for v, t in zip(y, tr, strict=True) if t], wd)
        proba = head.proba(x[te])
        p[te] = proba[:, head.labels.index(positive)] if positive in head.labels else 0.0
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hand", type=Path, default=ROOT / "sample_data" / "judge_train")
    ap.add_argument("--model", default=None, help="transformers dir (default: the embedded GGUF, converted once)")
    ap.add_argument("--layers", default="6,12,18,24,30")
    ap.add_argument("--weight-decays", default="0.001,0.01,0.1")
    ap.add_argument("--kinds", default="last,mean,both")
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--cache-dir", type=Path, default=Path(".recgpt-cache"))
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    if "gold" in args.hand.parts:
        ap.error("--hand: the gold set is the judge's test set; choose the recipe on other labels")
    from recgpt_cli.align.sft import resolve_base

    model_dir, _ = resolve_base(args.model, args.cache_dir)
    fm = FeatureModel(model_dir, DEFAULT_LAYER)
    layers = [int(v) for v in args.layers.split(",")]
    wds = [float(v) for v in args.weight_decays.split(",")]
    kinds = args.kinds.split(",")
    console = Console()
    table = Table(title=f"judge heads: {args.folds}-fold user-grouped CV on {args.hand} (agreement on the sample's "
                  "pass; nothing from gold)")
    for col in ("features", "layer", "weight decay", *(f"{t} ACC / +rules / AUC" for t in TASKS)):
        table.add_column(col, justify="left" if col == "features" else "right")
    results: dict[str, Any] = {"hand": str(args.hand), "folds": args.folds, "rows": []}
    data = {}
    for task in TASKS:
        spec = get_task(task)
        samples = [orjson.loads(line) for line in (args.hand / f"{task}.jsonl").read_text().splitlines()]
        t0 = time.perf_counter()
        h = all_layers(fm, samples, task)
        console.print(f"[dim]{task}: {len(samples)} samples, features {time.perf_counter() - t0:.0f}s[/]")
        y = np.array([spec.sample_passes(s["labels"]) for s in samples], dtype=int)
        rules = np.array([r["pass"] for r in rules_only(task, samples)], dtype=bool)
        folds = np.array([fold_of(s["user_id"], args.folds) for s in samples])
        data[task] = (spec, samples, h, y, rules, folds)
        results[task] = {"n": len(samples), "always_pass": float(y.mean()), "rules_only": float((rules == y).mean())}
    table.add_row("always pass / rules only", "", "", *(
        f"{results[t]['always_pass']:.3f} / {results[t]['rules_only']:.3f}" for t in TASKS))

    def cells(pred: np.ndarray, p: np.ndarray, y: np.ndarray, rules: np.ndarray) -> tuple[float, float, float]:
        return float((pred == y).mean()), float(((pred & rules) == y).mean()), auc(y, p)

    for kind, layer, wd in itertools.product(kinds, layers, wds):
        row: dict[str, Any] = {"kind": kind, "layer": layer, "weight_decay": wd}
        for task in TASKS:
            spec, samples, h, y, rules, folds = data[task]
            p = cv_proba(features(h, kind, layer), ["pass" if v else "fail" for v in y], folds, wd, "pass")
            row[task] = cells(p >= 0.5, p, y, rules)
        results["rows"].append(row)
        table.add_row(kind, str(layer), f"{wd:g}", *(" / ".join(f"{v:.3f}" for v in row[t]) for t in TASKS))
    # The AND of one head per criterion, at the kept setting (the sample head decides in the product).
    row = {"kind": "both, AND of criterion heads", "layer": DEFAULT_LAYER, "weight_decay": DEFAULT_WEIGHT_DECAY}
    for task in TASKS:
        spec, samples, h, y, rules, folds = data[task]
        x = features(h, "both", DEFAULT_LAYER)
        ok = np.ones(len(y), dtype=bool)
        for c in spec.criteria:
            yc = ["pass" if spec.passes(c, s["labels"][c]) else "fail" for s in samples]
            if "fail" in yc:  # a criterion nobody failed passes everywhere
                ok &= cv_proba(x, yc, folds, DEFAULT_WEIGHT_DECAY, "pass") >= 0.5
        row[task] = cells(ok, ok.astype(float), y, rules)
    results["rows"].append(row)
    table.add_row(row["kind"], str(DEFAULT_LAYER), f"{DEFAULT_WEIGHT_DECAY:g}",
                  *(" / ".join(f"{v:.3f}" for v in row[t]) for t in TASKS))
    console.print(table)
    if args.json_out:
        Path(args.json_out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
