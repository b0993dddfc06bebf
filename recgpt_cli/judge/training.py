"""Judge training data from the label buffer (§3.2): chat samples rendered with the judge's own prompt files
(train = serve), with the paper's data care.

- Held-out split: a fixed share of USERS (by a hash of the user id, so it never moves as labels grow) is kept out
  of training; `recgpt judge check` measures agreement there.
- Recency-prioritised downsampling: past `max_per_class` samples of one class (the sample's overall pass / fail)
  the newest labels are kept — people's standards drift, so newer labels speak for the current guide.
- Minority-class augmentation: the rarer class gets extra variants until it is at least `minority_share` of the
  majority, one more round per shortfall. A variant of a derived label shows the newest part of the behaviour
  history only (derived labels do not depend on the history's length), so the copies are new inputs; a label a
  person (or a teacher) gave may rest on the whole history ("several behaviours" -> strong correlation), so its
  variant is the sample itself, shown again (plain oversampling).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recgpt_cli.align.samples import Sample, reply_json
from recgpt_cli.judge.criteria import get_task
from recgpt_cli.judge.samples import prompt_variables
from recgpt_cli.llm.prompts import Prompt, load_prompt

JUDGE_TASKS = {"interests": "judge_interests", "tags": "judge_tags", "explanations": "judge_explanations"}


@dataclass
class JudgeDataConfig:
    heldout_share: float = 0.2  # of users
    max_per_class: int = 600  # per task and class, newest kept
    minority_share: float = 0.5  # the rarer class is augmented up to this share of the larger one
    max_rounds: int = 3  # augmentation rounds (each adds at most one variant per minority sample)


def is_heldout(user_id: str, share: float) -> bool:
    """Whether `user_id` belongs to the held-out users (a stable hash, independent of the data)."""
    h = int.from_bytes(hashlib.sha256(f"judge-heldout\x1f{user_id}".encode()).digest()[:4], "little")
    return h / 2**32 < share


def split_heldout(rows: Sequence[dict[str, Any]], share: float, task: str | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows) of labelled buffer rows ({"user_id", "sample", "labels", "ts", ...}), by user.
    With `task`, a held-out row whose judge input a training user also has is dropped from the held-out rows:
    two users can show the judge the same thing (derived template explanations do), and scoring on it would be
    scoring on a training input."""
    train: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for r in rows:
        (held if is_heldout(str(r.get("user_id") or r["sample"].get("user_id")), share) else train).append(r)
    if task is not None:
        from recgpt_cli.judge.buffer import judge_input_hash

        seen = {judge_input_hash(r["sample"], task) for r in train}
        held = [r for r in held if judge_input_hash(r["sample"], task) not in seen]
    return train, held


def downsample_recent(rows: Sequence[dict[str, Any]], task: str, max_per_class: int) -> list[dict[str, Any]]:
    """At most `max_per_class` rows per overall class, the newest labels first (ties: sample hash)."""
    spec = get_task(task)
    out: list[dict[str, Any]] = []
    for cls in (True, False):
        same = [r for r in rows if spec.sample_passes(r["labels"]) is cls]
        same.sort(key=lambda r: (str(r.get("ts") or ""), str(r.get("sample_hash") or "")), reverse=True)
        out.extend(same[:max_per_class])
    return out


def _shortened(sample: dict[str, Any], round_: int) -> dict[str, Any] | None:
    """The sample with only the newest 1/(round+1) of its history lines (newest first in `compress` output)."""
    lines = [ln for ln in str(sample.get("behaviors") or "").splitlines() if ln.strip()]
    keep = max(1, len(lines) // (round_ + 1))
    if len(lines) < 2 or keep >= len(lines):
        return None
    return {**sample, "behaviors": "\n".join(lines[:keep])}


def is_derived(source: Any) -> bool:
    """Whether a label's source is a derivation rule (judge/derive.py SOURCES), not a person or a teacher."""
    return str(source or "").startswith("derived:")


def _variant(row: dict[str, Any], round_: int) -> dict[str, Any] | None:
    return _shortened(row["sample"], round_) if is_derived(row.get("source")) else row["sample"]


def augment_minority(rows: Sequence[dict[str, Any]], task: str, cfg: JudgeDataConfig
                     ) -> list[tuple[dict[str, Any], int]]:
    """(row, round) pairs: every row at round 0, plus minority-class variants at rounds 1..max_rounds."""
    spec = get_task(task)
    out = [(r, 0) for r in rows]
    n_pass = sum(spec.sample_passes(r["labels"]) for r in rows)
    n_fail = len(rows) - n_pass
    minority = n_pass < n_fail
    pool = [r for r in rows if spec.sample_passes(r["labels"]) is minority]
    need = int(cfg.minority_share * max(n_pass, n_fail)) - min(n_pass, n_fail)
    for round_ in range(1, cfg.max_rounds + 1):
        if need <= 0:
            break
        for r in pool[:need]:
            variant = _variant(r, round_)
            if variant is not None:
                out.append(({**r, "sample": variant}, round_))
                need -= 1
    return out


def judge_sample(sample: dict[str, Any], labels: dict[str, str], task: str, *, prompt: Prompt | None = None,
                 source: str = "labels", round_: int = 0, meta: dict[str, Any] | None = None) -> Sample:
    """One chat sample: the judge prompt as `recgpt judge` renders it, the labels as the reply (schema order)."""
    spec = get_task(task)
    tmpl = prompt or load_prompt(spec.prompt)
    target = reply_json({c: labels[c] for c in spec.criteria})
    return Sample(JUDGE_TASKS[task], source, tmpl.render(prompt_variables(sample, task)), target, round=round_,
                  user_id=str(sample.get("user_id") or "") or None,
                  category="pass" if spec.sample_passes(labels) else "fail", meta=meta or {})


def build_judge_samples(rows: Sequence[dict[str, Any]], task: str, cfg: JudgeDataConfig | None = None
                        ) -> tuple[list[Sample], list[dict[str, Any]], dict[str, int]]:
    """(training samples, held-out rows, counts) from complete labelled buffer rows of `task`."""
    from recgpt_cli.judge.buffer import judge_input_hash

    cfg = cfg or JudgeDataConfig()
    spec = get_task(task)
    prompt = load_prompt(spec.prompt)
    train, held = split_heldout(rows, cfg.heldout_share, task)
    kept = downsample_recent(train, task, cfg.max_per_class)
    pairs = augment_minority(kept, task, cfg)
    samples = [judge_sample(r["sample"], r["labels"], task, prompt=prompt, source=str(r.get("source") or "labels"),
                            round_=rnd, meta={"sample_hash": r.get("sample_hash"), "augmented": rnd > 0,
                                              "input_hash": judge_input_hash(r["sample"], task)})
               for r, rnd in pairs]
    counts = {"rows": len(rows), "heldout": len(held), "train_rows": len(train), "kept": len(kept),
              "augmented": len(pairs) - len(kept), "samples": len(samples),
              "pass": sum(s.category == "pass" for s in samples), "fail": sum(s.category == "fail" for s in samples)}
    return samples, held, counts


def samples_from_buffer(buffer: Any, tasks: Sequence[str], cfg: JudgeDataConfig | None = None
                        ) -> tuple[list[Sample], dict[str, list[dict[str, Any]]], dict[str, dict[str, int]]]:
    """Judge training samples for `tasks` from every complete label in the buffer (an open connection), the
    held-out rows per task, and counts per task."""
    from recgpt_cli.judge.buffer import labelled

    samples: list[Sample] = []
    held: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for task in tasks:
        s, h, c = build_judge_samples(labelled(buffer, task), task, cfg)
        samples += s
        held[task], counts[task] = h, c
    return samples, held, counts


def heldout_record(row: dict[str, Any]) -> dict[str, Any]:
    """A held-out buffer row in the gold-label format `recgpt judge check --against` reads."""
    return {**row["sample"], "sample_id": row.get("sample_id") or row["sample"].get("sample_id"),
            "labels": row["labels"], "source": row.get("source")}
