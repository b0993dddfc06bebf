"""Incremental learning (issue 9 item 4; §2.2.2, measured the way Table 5 measures it): does continuing an aligned
model on the newest slice of logs raise HR@30 on users after it?

    python bench/bench_incremental.py --work DIR [--datasets sample_data,ml-100k] [--quantile 0.75]
                                      [--per-task 120] [--il-per-task 60] [--users 50] [--control] [--json FILE]

Per dataset (the intent bench's stores, LOO split, its 100 scored users never in any training set), T = the
`--quantile` of the train interactions' times (the start of that day):

1. slice A: `align data --source logs --until T` samples (`--per-task` seeded per task and dataset), the alignment
   bench's recipe (`bench_align.RECIPE`, one LoRA epoch) → model A (no IL);
2. slice B: `align data --since T` samples (`--il-per-task`), `align sft --from A` with the same recipe → A + IL;
3. `--control`: A continued on as many *other* slice-A samples (same steps) → A + more old logs, which tells a gain
   from newer logs apart from a gain from more steps.

Scored (test phase, split-aware, `--constrain` as the CLI's default) on the first `--users` scored users whose test
interaction is on or after T ("users after the slice"): HR@30 tag→category (φ), the share of tags the rules keep,
interests per user and LLM s/user, with the non-LLM sources on the same users. Resumable: samples, SFT checkpoints
and the LLM cache live in DIR.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_align, bench_intent  # noqa: E402
from recgpt_cli.align.data import LogsConfig, build_from_logs  # noqa: E402
from recgpt_cli.align.samples import Sample, load_samples, open_samples, save_samples  # noqa: E402
from recgpt_cli.align.sft import SFTConfig, train_sft  # noqa: E402
from recgpt_cli.compress import DEFAULT_MAX_TOKENS  # noqa: E402
from recgpt_cli.evaluate import tag_category_hit_rate  # noqa: E402
from recgpt_cli.splits import load_split  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402
from recgpt_cli.tag_category import fit_tag_category  # noqa: E402
from recgpt_cli.tags import CONSTRAIN_MODES, DEFAULT_CONSTRAIN  # noqa: E402
from recgpt_cli.tokens import token_counter  # noqa: E402


def slice_time(con: Any, quantile: float) -> datetime:
    """The start of the day at the `quantile` of the train interactions' times."""
    ts = np.sort(load_split(con, bench_intent.PROTOCOL).train.ts)
    day = ts[int(quantile * (len(ts) - 1))].astype("datetime64[D]")
    return datetime.fromisoformat(str(day))


def pick(built: list[Sample], per_task: int, seed: int, skip: frozenset[str] = frozenset()) -> list[Sample]:
    """`per_task` seeded samples per task, none of `skip` (hashes); the pool in hash order, so a rebuilt and a
    reloaded store give the same pick."""
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for task in ("interest_mining", "tag_prediction"):
        pool = sorted((s for s in built if s.task == task and s.hash not in skip), key=lambda s: s.hash)
        idx = sorted(rng.choice(len(pool), size=min(per_task, len(pool)), replace=False).tolist())
        out += [pool[i] for i in idx]
    return out


def samples(path: Path, make: Any) -> list[Sample]:
    """Samples stored at `path` (DuckDB), built once by `make()` (written aside, then renamed: a kill leaves none)."""
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        store = open_samples(tmp)
        save_samples(store, make())
        store.close()
        tmp.rename(path)
    return load_samples(path)


def later_users(con: Any, users: list[str], t: datetime, n: int) -> list[str]:
    """The first `n` of `users` whose test interaction is on or after `t`."""
    split = load_split(con, bench_intent.PROTOCOL)
    test = split.phase("test")
    when = {split.user_ids[int(u)]: ts for u, ts in zip(test.user, test.ts, strict=True)}
    return [u for u in users if when[u] >= np.datetime64(t)][:n]


@functools.cache
def phi_of(db: Path) -> Any:
    """φ fitted on the store's titles, once per store (every source of a dataset is mapped by the same φ)."""
    con = open_db(db, read_only=True)
    try:
        return fit_tag_category(con, holdout=0.0)[0]
    finally:
        con.close()


def score(name: str, db: Path, users: list[str], model: Path | None, work: Path, args: argparse.Namespace
          ) -> dict[str, Any]:
    ns = argparse.Namespace(history_tokens=DEFAULT_MAX_TOKENS, model=str(model / "model.gguf") if model else None,
                            max_interests=bench_intent.BENCH_INTERESTS, constrain=args.constrain)
    rows, cost = bench_intent.llm_records(db, users, work, ns)
    path = bench_intent.write_jsonl(work / f"{name}-{model.name if model else 'base'}-tags.jsonl", rows)
    con = open_db(db, read_only=True)
    hr = tag_category_hit_rate(con, path, bench_intent.PROTOCOL, "test", phi=phi_of(db))["hr_tagcategory@30"]
    con.close()
    kept = sum(len(r.get("tags") or []) for r in rows)
    removed = sum(sum((r.get("tag_rules_removed") or {}).values()) for r in rows)
    return {"hr@30": hr, "kept_share": kept / max(1, kept + removed), "tags_per_user": kept / len(rows),
            "interests_per_user": sum(len(r.get("interests") or []) for r in rows) / len(rows), **cost}


def baselines(db: Path, users: list[str]) -> dict[str, float]:
    con = open_db(db, read_only=True)
    split = load_split(con, bench_intent.PROTOCOL)
    out = {}
    for src, rows in bench_intent.baseline_records(con, split, users).items():
        if src == "oracle":
            continue
        path = bench_intent.write_jsonl(Path(str(db) + f".{src}.jsonl"), rows)
        out[src] = tag_category_hit_rate(con, path, bench_intent.PROTOCOL, "test",
                                         phi=phi_of(db))["hr_tagcategory@30"]
    con.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--datasets", default="sample_data,ml-100k")
    ap.add_argument("--quantile", type=float, default=0.75, help="T = this quantile of the train times")
    ap.add_argument("--per-task", type=int, default=120, help="slice-A samples per task and dataset")
    ap.add_argument("--il-per-task", type=int, default=60, help="slice-B samples per task and dataset")
    ap.add_argument("--users", type=int, default=50, help="scored users after T per dataset")
    ap.add_argument("--control", action="store_true", help="also A + as many other slice-A samples")
    ap.add_argument("--constrain", default=DEFAULT_CONSTRAIN, choices=CONSTRAIN_MODES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    names = args.datasets.split(",")
    sets: dict[str, list[Sample]] = {"a": [], "b": [], "control": []}
    meta: dict[str, dict[str, Any]] = {}
    for name in names:
        con, scored = bench_intent.scored_store(name, work, read_only=True)
        t = slice_time(con, args.quantile)
        cfg = LogsConfig(protocol=bench_intent.PROTOCOL, history_tokens=DEFAULT_MAX_TOKENS,
                         max_interests=bench_intent.BENCH_INTERESTS, tags_per_call=3)
        old = samples(work / f"{name}-slice-a.duckdb", lambda c=con, s=scored, t=t, cfg=cfg: list(build_from_logs(
            c, ["interests", "tags"], LogsConfig(**{**vars(cfg), "until": t}), exclude=s,
            token_counter=token_counter())))
        new = samples(work / f"{name}-slice-b.duckdb", lambda c=con, s=scored, t=t, cfg=cfg: list(build_from_logs(
            c, ["interests", "tags"], LogsConfig(**{**vars(cfg), "since": t}), exclude=s,
            token_counter=token_counter())))
        a = pick(old, args.per_task, 0)
        sets["a"] += a
        sets["b"] += pick(new, args.il_per_task, 0)
        sets["control"] += pick(old, args.il_per_task, 1, frozenset(s.hash for s in a))
        users = later_users(con, scored, t, args.users)
        con.close()
        for part in ("a", "b", "control"):
            assert not {s.user_id for s in sets[part]} & set(scored), "a scored user leaked into training"
        meta[name] = {"T": t.date().isoformat(), "slice_a_built": len(old), "slice_b_built": len(new),
                      "users": len(users), "user_ids": users}
        print(f"{name}: T {t.date()}, slice A {len(old)} samples built, slice B {len(new)}; "
              f"{len(users)} scored users after T", file=sys.stderr)

    def train(part: str, out: Path, base: Path | None) -> Path:
        cfg = SFTConfig(**bench_align.RECIPE, device=args.device)  # type: ignore[arg-type]
        r = train_sft(sets[part], out, cfg, base=base, progress=lambda e: e["step"] % 10 == 0 and print(
            f"  {out.name} step {e['step']}/{e['of']} loss {e['loss']:.3f} {e['tokens_per_s']:.0f} tok/s",
            file=sys.stderr))
        print(f"{out.name}: {r.steps} steps on {r.samples} samples, {r.train_s:.0f}s, loss {r.first_loss:.3f} -> "
              f"{r.last_loss:.3f}", file=sys.stderr)
        return out

    models = {"A (slice before T)": train("a", work / "model-a", None)}
    models["A + IL (slice after T)"] = train("b", work / "model-il", work / "model-a")
    if args.control:
        models["A + more slice-A logs (control)"] = train("control", work / "model-control", work / "model-a")
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in names:
        db = work / f"{name}.duckdb"
        users = meta[name]["user_ids"]
        for src, hr in baselines(db, users).items():
            results.append({"dataset": name, "source": src, "hr@30": hr})
        for label, model in models.items():
            manifest = json.loads((model / "manifest.json").read_text())
            results.append({"dataset": name, "source": f"llm {label}", **score(name, db, users, model, work, args),
                            "steps": manifest["steps"], "train_s": manifest["train_s"],
                            "peak_memory_mb": manifest["peak_memory_mb"]})
    table = Table(title=f"Incremental learning: HR@30 on users after T (LOO test phase; scoring "
                        f"{time.perf_counter() - started:.0f}s)")
    cols = ["dataset", "source", "hr@30", "kept_share", "tags_per_user", "interests_per_user", "llm_s_per_user",
            "steps", "train_s"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("dataset", "source") else "right")
    for r in results:
        table.add_row(*(bench_intent.fmt(r.get(c, float("nan"))) for c in cols))
    Console(width=200).print(table)
    Console(width=200).print({k: {m: v for m, v in d.items() if m != "user_ids"} for k, d in meta.items()})
    if args.json:
        args.json.write_text(json.dumps({"results": results, "slices": meta}, indent=1, default=str))


if __name__ == "__main__":
    main()
