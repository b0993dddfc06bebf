"""Agreement between the LLM judge and human labels, in the form of Table 9 (§4.3): ACC, Precision, Recall, F1.

Positive class = "passes": for a sample, passes every criterion; for a criterion, a passing label ("Yes";
"Excellent"/"Good"; "spontaneity"; "strong correlation"). Precision/recall/F1 with no predicted (or no true)
positives are 0.0, not undefined. `label_acc` is exact-label agreement (it tells "Good" from "Excellent").
Rows whose judgement failed (`error`) are left out and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from recgpt_cli.judge.criteria import JudgeTask, get_task


def binary_metrics(y_true: list[bool], y_pred: list[bool]) -> dict[str, float | int]:
    """ACC / Precision / Recall / F1 with positive = True, plus the confusion counts."""
    tp = sum(t and p for t, p in zip(y_true, y_pred, strict=True))
    fp = sum((not t) and p for t, p in zip(y_true, y_pred, strict=True))
    fn = sum(t and (not p) for t, p in zip(y_true, y_pred, strict=True))
    tn = sum((not t) and (not p) for t, p in zip(y_true, y_pred, strict=True))
    n = len(y_true)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": n, "acc": (tp + tn) / n if n else 0.0, "precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def agreement(judged: Iterable[dict[str, Any]], labels: Iterable[dict[str, Any]], task: str | None = None) -> dict:
    """Join judge rows with human-labelled rows on `sample_id`; metrics overall and per criterion (Table 9).

    `labels` rows carry {"sample_id", "labels": {criterion: label}}. The task is taken from the judged rows'
    `task` unless given. Returns {"task","n","n_errors","n_missing","n_unlabelled","overall","criteria"}.
    """
    judged = list(judged)
    task = task or next((str(r["task"]) for r in judged if r.get("task")), None)
    if task is None:
        raise ValueError("cannot tell the task: no judged row has 'task'")
    spec = get_task(task)
    gold = {str(r["sample_id"]): r["labels"] for r in labels}
    by_id = {str(r["sample_id"]): r for r in judged}
    pairs = [(by_id[sid], gold[sid]) for sid in gold if sid in by_id and not by_id[sid].get("error")]
    out: dict[str, Any] = {
        "task": task, "n": len(pairs),
        "n_errors": sum(1 for sid in gold if sid in by_id and by_id[sid].get("error")),
        "n_missing": sum(1 for sid in gold if sid not in by_id),
        "n_unlabelled": sum(1 for sid in by_id if sid not in gold),
    }
    out["overall"] = binary_metrics([spec.sample_passes(g) for _, g in pairs],
                                    [spec.sample_passes(j["verdicts"]) for j, _ in pairs])
    out["criteria"] = {}
    for c in spec.criteria:
        y_true = [spec.passes(c, g[c]) for _, g in pairs]
        y_pred = [spec.passes(c, j["verdicts"].get(c, "")) for j, _ in pairs]
        m = binary_metrics(y_true, y_pred)
        m["label_acc"] = sum(j["verdicts"].get(c) == g[c] for j, g in pairs) / len(pairs) if pairs else 0.0
        out["criteria"][c] = m
    return out


def majority_baseline(labels: Iterable[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """Judge rows that always answer the most common human label per criterion: the floor to beat."""
    labels = list(labels)
    spec: JudgeTask = get_task(task)
    majority = {c: Counter(r["labels"][c] for r in labels).most_common(1)[0][0] for c in spec.criteria}
    return [{"task": task, "sample_id": r["sample_id"], "verdicts": dict(majority),
             "pass": spec.sample_passes(majority)} for r in labels]
