"""Rebuild recgpt's packaged alignment adapter, `recgpt_cli/llm/aligned/` (what the LLM stages serve by default).

    python bench/build_aligned.py --work build/aligned            # ~1 hour on 2 CPU cores (`make aligned`)
    python bench/build_aligned.py --work build/aligned --samples-only

Split honesty by construction: the samples come from two synthetic shops that no evaluation scores —
`sample_data/generate.py` under seeds 11 and 13 (sample_data itself is seed 7), every user and item id prefixed
`w<seed>-` — so the default model has learned no user of sample_data, ml-100k or any imported dataset.

1. Per world: generate, prefix ids, `recgpt import jsonl`, `recgpt align data` (logs: interests + tags, the LOO
   split's train part, 2 cut points a user). World 11 renders histories with compress's default budget (2,048
   tokens), world 13 with the intent bench's (384), so the adapter has seen both prompt lengths.
2. 120 seeded samples per task and world = 480 (the alignment bench's recipe size).
3. `recgpt align sft`: bench_align.RECIPE (LoRA r 16, alpha 32, lr 5e-4, batch 4, one epoch) with room for the
   long histories: samples up to 1,536 tokens (10 of the 480 are longer and skipped: 118 steps). The packaged
   adapter was trained without gradient checkpointing (36 min on 2 cores, peak RSS 24.4 GB: more than most
   laptops have); this script turns it on (the same losses, a test checks it; ~1.5x the time, far less memory).
4. `adapter.gguf` (llama.cpp LoRA, f16) + `manifest.json` (tasks, recipe, data hash, what training measured)
   are copied into `recgpt_cli/llm/aligned/`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORLDS = ((11, 2048, 0), (13, 384, 1))  # (generator seed, compress budget, pick seed)
PER_TASK = 120
TASKS = ("interest_mining", "tag_prediction")
SFT_ARGS = ["--device", "cpu", "--threads", "2", "--save-every", "10", "--max-length", "1536",
            "--gradient-checkpointing", "--no-export"]  # the rest is align sft's defaults = bench_align.RECIPE


def recgpt(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "recgpt_cli", *args], check=True)


def build_world(seed: int, budget: int, work: Path) -> Path:
    raw, world = work / f"raw-{seed}", work / f"world-{seed}"
    subprocess.run([sys.executable, str(ROOT / "sample_data" / "generate.py"), "--seed", str(seed), "--out",
                    str(raw)], check=True, stdout=subprocess.DEVNULL)
    world.mkdir(parents=True, exist_ok=True)
    prefix = f"w{seed}-"
    for name in ("users", "items", "behaviors"):
        with (raw / f"{name}.jsonl").open() as src, (world / f"{name}.jsonl").open("w") as dst:
            for line in src:
                rec = json.loads(line)
                for key in ("user_id", "item_id"):
                    if rec.get(key):
                        rec[key] = prefix + rec[key]
                dst.write(json.dumps(rec) + "\n")
    db = work / f"w{seed}.duckdb"
    db.unlink(missing_ok=True)
    recgpt("import", "jsonl", "--db", str(db), *(x for n in ("users", "items", "behaviors")
                                                  for x in (f"--{n}", str(world / f"{n}.jsonl"))), "--quiet")
    out = work / f"s{seed}-{budget}.jsonl"
    store = work / f"s{seed}-{budget}.duckdb"
    store.unlink(missing_ok=True)
    recgpt("align", "data", "--db", str(db), "--samples", str(store), "--jsonl", str(out), "--history-tokens",
           str(budget), "--quiet")
    return out


def pick(built: Path, seed: int) -> list[str]:
    rows = [json.loads(line) for line in built.read_text().splitlines()]
    rng = np.random.default_rng(seed)
    lines = []
    for task in TASKS:
        pool = [r for r in rows if r["task"] == task]
        for i in sorted(rng.choice(len(pool), size=PER_TASK, replace=False).tolist()):
            lines.append(json.dumps(pool[i]))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "aligned")
    ap.add_argument("--samples-only", action="store_true")
    ap.add_argument("--dest", type=Path, default=ROOT / "recgpt_cli" / "llm" / "aligned")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    samples = args.work / "samples.jsonl"
    lines = [line for seed, budget, pick_seed in WORLDS for line in pick(build_world(seed, budget, args.work),
                                                                         pick_seed)]
    samples.write_text("\n".join(lines) + "\n")
    print(f"{samples}: {len(lines)} samples", file=sys.stderr)
    if args.samples_only:
        return
    model = args.work / "model"
    recgpt("align", "sft", "--samples", str(samples), "--out", str(model), *SFT_ARGS)
    package(model, args.dest)


def package(model: Path, dest: Path) -> None:
    """Copy the adapter GGUF and a manifest of what it is into `dest` (the packaged adapter's folder)."""
    from recgpt_cli.align.gguf_export import export_lora_gguf
    from recgpt_cli.llm.aligned import EMBEDDED
    from recgpt_cli.llm.embedded import embedded_model_path
    from recgpt_cli.llm.fingerprint import file_sha256

    m = json.loads((model / "manifest.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "adapter.gguf.tmp"
    export_lora_gguf(model / "adapter", tmp)
    shutil.move(str(tmp), dest / "adapter.gguf")
    keep = ("data", "config", "steps", "samples", "skipped_long", "tasks", "train_s", "device", "precision",
            "tokens_per_s", "peak_memory_mb", "first_loss", "last_loss")
    manifest = {"what": "LoRA adapter of the embedded SmolLM2-135M-Instruct for interest mining and tag prediction, "
                        "trained by bench/build_aligned.py on two synthetic shops (generator seeds "
                        f"{', '.join(str(w[0]) for w in WORLDS)}; ids prefixed w<seed>-), no scored user",
                "adapter_base": EMBEDDED, "adapter_base_sha256": file_sha256(embedded_model_path()),
                "worlds": [{"seed": s, "history_tokens": b, "per_task": PER_TASK} for s, b, _ in WORLDS],
                **{k: m[k] for k in keep if k in m}}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"packaged {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
