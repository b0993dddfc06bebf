"""Train the judge the way the README does, on sample_data, and time it (§3.2; issue 10's training recipe).

    python bench/bench_judge_train.py --work DIR [--threads 2] [--caps interests=40,tags=60,explanations=35]
                                      [--history-tokens 128] [--lr 1e-3] [--epochs 1]
                                      [--hand sample_data/judge_train] [--hand-repeat 1] [--no-derived]

Steps (library calls behind `recgpt judge derive`, `recgpt align data --source labels --task judge` and
`recgpt align sft --task judge`): labels derived from sample_data's ground truth for every user except the
intent bench's scored users (`bench_intent.pick_users`, 100 users), stored in DIR/labels.duckdb; judge samples with
20% of users held out (DIR/judge-heldout-<task>.jsonl), the newest `cap` labels kept per task and class; one LoRA
pass (r 16, lr 1e-3, batch 4, 128-token histories) into DIR/judge-model (hf/ + model.gguf). Then
`python bench/bench_judge.py --trained DIR/judge-model --heldout DIR` measures it.

`--hand DIR` adds labels written to the gold set's guide, in its format (DIR/<task>.jsonl, e.g.
sample_data/judge_train; never the gold samples themselves), under the source their rows name ("hand" where a row
names none). They go through the same user split (their held-out users are written to
DIR/judge-heldout-hand-<task>.jsonl, reported apart from the derived ones) and, being the newest labels, are kept
first by the per-class caps. `--hand-repeat K` shows each hand training sample K times per epoch; `--no-derived`
trains on the hand labels alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_intent  # noqa: E402

from recgpt_cli.align.data import LogsConfig  # noqa: E402
from recgpt_cli.align.sft import SFTConfig, train_sft  # noqa: E402
from recgpt_cli.intent import load_truth  # noqa: E402
from recgpt_cli.judge.buffer import import_labels, labelled, open_buffer  # noqa: E402
from recgpt_cli.judge.derive import derive_labels, store_derived  # noqa: E402
from recgpt_cli.judge.training import JudgeDataConfig, build_judge_samples, heldout_record, is_derived  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--caps", default="interests=40,tags=60,explanations=35", help="newest labels kept per class")
    ap.add_argument("--history-tokens", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (a smoke run)")
    ap.add_argument("--hand", type=Path, default=None, help="hand labels, DIR/<task>.jsonl in the gold format")
    ap.add_argument("--hand-repeat", type=int, default=1, help="times each hand training sample is shown per epoch")
    ap.add_argument("--no-derived", action="store_true", help="train on the hand labels alone")
    ap.add_argument("--method", choices=("lora", "full"), default="lora", help="LoRA (r 16) or full fine-tuning")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    con, scored = bench_intent.scored_store("sample_data", work)
    t0 = time.perf_counter()
    buf = open_buffer(work / "labels.duckdb")
    if not args.no_derived:
        stored = store_derived(buf, derive_labels(con, ["interests", "tags", "explanations"],
                                                  LogsConfig(protocol=bench_intent.PROTOCOL,
                                                             history_tokens=args.history_tokens),
                                                  truth=load_truth(ROOT / "sample_data" / "truth_interests.jsonl"),
                                                  exclude=scored))
        print(json.dumps({"derived": stored, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    caps = dict(spec.split("=") for spec in args.caps.split(","))
    if args.hand:
        for task in caps:
            got = import_labels(buf, args.hand / f"{task}.jsonl", task, source="hand", annotator="judge_train")
            print(json.dumps({"hand": task, **got}), flush=True)
    samples = []
    for task, cap in caps.items():
        rows = [r for r in labelled(buf, task) if not (args.no_derived and is_derived(r["source"]))]
        built, held, counts = build_judge_samples(rows, task, JudgeDataConfig(max_per_class=int(cap)))
        hand = [s for s in built if not is_derived(s.source)]
        samples += built + hand * (args.hand_repeat - 1)
        print(json.dumps({"task": task, **counts, "hand_samples": len(hand) * args.hand_repeat}), flush=True)
        for suffix, part in (("", [r for r in held if is_derived(r["source"])]),
                             ("hand-", [r for r in held if not is_derived(r["source"])])):
            if part:
                (work / f"judge-heldout-{suffix}{task}.jsonl").write_bytes(
                    b"".join(orjson.dumps(heldout_record(r)) + b"\n" for r in part))
    cfg = SFTConfig(method=args.method, batch_size=4, max_length=768, threads=args.threads, save_every=10, lr=args.lr,
                    epochs=args.epochs, max_steps=args.max_steps)
    r = train_sft(samples, work / "judge-model", cfg, progress=lambda e: print(json.dumps(e), flush=True))
    print(json.dumps({"steps": r.steps, "samples": r.samples, "train_s": round(r.train_s, 1),
                      "tokens_per_s": round(r.tokens_per_s, 1), "peak_memory_mb": round(r.peak_memory_mb),
                      "first_loss": r.first_loss, "last_loss": r.last_loss}), flush=True)


if __name__ == "__main__":
    main()
