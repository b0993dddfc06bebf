"""Train the judge the way the README does, on sample_data, and time it (§3.2; issue 10's training recipe).

    python bench/bench_judge_train.py --work DIR [--threads 2] [--caps interests=40,tags=60,explanations=35]
                                      [--history-tokens 128] [--lr 1e-3] [--epochs 1]

Steps (library calls behind `recgpt judge derive`, `recgpt align data --source labels --task judge` and
`recgpt align sft --task judge`): labels derived from sample_data's ground truth for every user except the
intent bench's scored users (`bench_intent.pick_users`, 100 users), stored in DIR/labels.duckdb; judge samples with
20% of users held out (DIR/judge-heldout-<task>.jsonl), the newest `cap` labels kept per task and class; one LoRA
pass (r 16, lr 1e-3, batch 4, 128-token histories) into DIR/judge-model (hf/ + model.gguf). Then
`python bench/bench_judge.py --trained DIR/judge-model --heldout DIR` measures it.
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
from recgpt_cli.judge.buffer import labelled, open_buffer  # noqa: E402
from recgpt_cli.judge.derive import derive_labels, store_derived  # noqa: E402
from recgpt_cli.judge.training import JudgeDataConfig, build_judge_samples, heldout_record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--caps", default="interests=40,tags=60,explanations=35", help="newest labels kept per class")
    ap.add_argument("--history-tokens", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (a smoke run)")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    con, scored = bench_intent.scored_store("sample_data", work)
    t0 = time.perf_counter()
    buf = open_buffer(work / "labels.duckdb")
    stored = store_derived(buf, derive_labels(con, ["interests", "tags", "explanations"],
                                              LogsConfig(protocol=bench_intent.PROTOCOL,
                                                         history_tokens=args.history_tokens),
                                              truth=load_truth(ROOT / "sample_data" / "truth_interests.jsonl"),
                                              exclude=scored))
    print(json.dumps({"derived": stored, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    samples = []
    for spec in args.caps.split(","):
        task, cap = spec.split("=")
        built, held, counts = build_judge_samples(labelled(buf, task), task, JudgeDataConfig(max_per_class=int(cap)))
        samples += built
        print(json.dumps({"task": task, **counts}), flush=True)
        (work / f"judge-heldout-{task}.jsonl").write_bytes(b"".join(orjson.dumps(heldout_record(r)) + b"\n"
                                                                    for r in held))
    cfg = SFTConfig(batch_size=4, max_length=768, threads=args.threads, save_every=10, lr=args.lr, epochs=args.epochs,
                    max_steps=args.max_steps)
    r = train_sft(samples, work / "judge-model", cfg, progress=lambda e: print(json.dumps(e), flush=True))
    print(json.dumps({"steps": r.steps, "samples": r.samples, "train_s": round(r.train_s, 1),
                      "tokens_per_s": round(r.tokens_per_s, 1), "peak_memory_mb": round(r.peak_memory_mb),
                      "first_loss": r.first_loss, "last_loss": r.last_loss}), flush=True)


if __name__ == "__main__":
    main()
