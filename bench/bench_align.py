"""Does alignment help (issue 9)? The embedded model before and after SFT on samples from logs, on the intent bench.

    python bench/bench_align.py [--datasets sample_data,ml-100k] [--work bench/out/intent] [--out bench/out/align]
                                [--per-task 120] [--steps N] [--device auto] [--json FILE]
    python bench/bench_align.py --samples-only          # build + export the samples (to train elsewhere, e.g. a GPU)
    python bench/bench_align.py --model DIR             # score an already trained model dir
    python bench/bench_align.py --model DIR --users 50 --base-work /tmp/intent   # base answers cached there
    python bench/bench_align.py --self-train-from DIR [--st-users 25 --k 4]    # + one self-training round
    python bench/bench_align.py --model DIR --constrain none                # free-text tags (default: the CLI's)

1. Samples (`recgpt align data --source logs`): per dataset, from the train part of the LOO split, for every user
   except the intent bench's scored users (`bench_intent.pick_users`, written to `<out>/<dataset>-bench-users.txt`);
   `--per-task` seeded samples per task and dataset (interests, tags).
2. SFT (`recgpt align sft`): LoRA r=16 on the embedded model, one epoch (or `--steps`), batch 4; its train time and
   peak memory come from the model's manifest.json.
3. Scores: `bench_intent.run_dataset` with the aligned GGUF, on the same 100 held-out users, split-aware (test
   phase), against the base model's rows and the non-LLM baselines of the same run (same tower, same metric code).

`--self-train-from DIR` (§2.1.2 stage 3, one round of `recgpt align self-train --task tags --pool`): the aligned
model DIR answers k times at temperature 0.7 (decoded under `--constrain`) per tag input of `--st-users` seeded
train users per dataset (never the scored users), the rules keep tags one by one, and DIR is trained again on
`<out>/samples.jsonl` plus the kept samples (the recipe, one epoch) into `<out>/self-train`, which is then scored
like any model.
"""

from __future__ import annotations

import argparse
import json
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

from bench import bench_intent  # noqa: E402
from recgpt_cli.align.data import INTEREST_RANKS, LogsConfig, build_from_logs  # noqa: E402
from recgpt_cli.align.samples import Sample, open_samples, save_samples  # noqa: E402
from recgpt_cli.align.sft import SFTConfig, train_sft  # noqa: E402
from recgpt_cli.compress import DEFAULT_MAX_TOKENS  # noqa: E402
from recgpt_cli.tags import CONSTRAIN_MODES, DEFAULT_CONSTRAIN, EXPLORE  # noqa: E402
from recgpt_cli.tokens import token_counter  # noqa: E402

RECIPE = dict(method="lora", lora_r=16, lora_alpha=32, lr=5e-4, epochs=1, batch_size=4, max_length=1024, seed=0,
              save_every=10, gguf_type="q8_0")


def build_samples(name: str, work: Path, out: Path, per_task: int, seed: int, max_interests: int,
                  interest_rank: str) -> list[Sample]:
    con, users = bench_intent.scored_store(name, work, read_only=True)
    (out / f"{name}-bench-users.txt").write_text("\n".join(users) + "\n")
    cfg = LogsConfig(protocol=bench_intent.PROTOCOL, history_tokens=DEFAULT_MAX_TOKENS, max_interests=max_interests,
                     interest_rank=interest_rank, tags_per_call=3)
    built = list(build_from_logs(con, ["interests", "tags"], cfg, exclude=users, token_counter=token_counter()))
    con.close()
    rng = np.random.default_rng(seed)
    picked: list[Sample] = []
    for task in ("interest_mining", "tag_prediction"):
        pool = [s for s in built if s.task == task]
        idx = sorted(rng.choice(len(pool), size=min(per_task, len(pool)), replace=False).tolist())
        picked += [pool[i] for i in idx]
        print(f"{name}: {task} {len(pool)} built, {len(idx)} kept", file=sys.stderr)
    assert not {s.user_id for s in picked} & set(users), "a scored user leaked into the training samples"
    return picked


def self_train_round(names: list[str], args: argparse.Namespace, out: Path) -> Path:
    """One pooled self-training round from `args.self_train_from` on tag inputs of train users (bench users
    excluded); returns the new model dir. Generation and training are resumable (LLM cache, SFT checkpoints)."""
    import os

    from recgpt_cli.align.data import log_contexts
    from recgpt_cli.align.samples import load_samples
    from recgpt_cli.align.self_train import rejection_samples
    from recgpt_cli.catalogue import Catalogue
    from recgpt_cli.llm.factory import make_llm
    from recgpt_cli.llm.options import LLMOptions

    start = Path(args.self_train_from)
    model_dir = out / "self-train"
    os.environ.setdefault("RECGPT_CACHE_DIR", str(out / "llm-cache"))
    llm = make_llm(LLMOptions(model=str(start / "model.gguf")), task="align_self_train")
    new: list[Sample] = []
    for name in names:
        con, users = bench_intent.scored_store(name, Path(args.work), read_only=True)
        cfg = LogsConfig(protocol=bench_intent.PROTOCOL, history_tokens=DEFAULT_MAX_TOKENS,
                         max_interests=args.max_interests,
                         interest_rank=args.interest_rank, tags_per_call=3, max_users=args.st_users, seed=1)
        contexts = list(log_contexts(con, cfg, exclude=users, token_counter=token_counter()))
        catalogue = Catalogue.from_db(con)
        con.close()
        assert not {c.user_id for c in contexts} & set(users), "a scored user leaked into self-training"
        t0 = time.perf_counter()
        got, st = rejection_samples(contexts, llm, task="tags", k=args.k, config=cfg, catalogue=catalogue, pool=True,
                                    constrain=args.constrain)
        print(f"{name}: self-train round 1: {len(contexts)} contexts, {st.inputs} tag inputs, {st.answers} answers, "
              f"tag pass rate {st.kept_items}/{st.items} = {st.item_pass_rate:.3f}, whole answers {st.passed} "
              f"({st.pass_rate:.3f}), {len(got)} samples, removed {st.removed}, {time.perf_counter() - t0:.0f}s",
              file=sys.stderr)
        new += got
    base = load_samples(out / "samples.jsonl")
    (out / "self-train-samples.jsonl").write_bytes(b"".join(orjson.dumps(s.to_json()) + b"\n" for s in new))
    cfg_sft = SFTConfig(**RECIPE, max_steps=args.steps, device=args.device)  # type: ignore[arg-type]
    r = train_sft([*base, *new], model_dir, cfg_sft, base=str(start), progress=lambda e: e["step"] % 10 == 0 and print(
        f"  step {e['step']}/{e['of']} loss {e['loss']:.3f} {e['tokens_per_s']:.0f} tok/s", file=sys.stderr))
    print(f"self-train: {r.steps} steps on {len(base)} + {len(new)} samples, {r.train_s:.0f}s, loss "
          f"{r.first_loss:.3f} -> {r.last_loss:.3f}", file=sys.stderr)
    return model_dir


def score(name: str, args: argparse.Namespace, model: str | None, work: str) -> list[dict[str, Any]]:
    ns = argparse.Namespace(users=100, subset=args.users, seed=0, history_tokens=args.history_tokens, model=model,
                            work=work,
                            constrain=args.constrain, max_interests=args.max_interests, explore=args.explore)
    return bench_intent.run_dataset(name, ns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="sample_data,ml-100k")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "intent"), help="the intent bench's work dir")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "align"))
    ap.add_argument("--per-task", type=int, default=120)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=None, help="a trained model dir: skip building and training")
    ap.add_argument("--samples-only", action="store_true")
    ap.add_argument("--users", type=int, default=None, help="score the first N of the intent bench's 100 users "
                    "(the aligned model is slower to serve: q8_0, longer answers)")
    ap.add_argument("--base-work", default=None, help="work dir whose LLM cache holds the base model's answers "
                    "(a bench_intent --work); default --work")
    ap.add_argument("--self-train-from", default=None, help="an aligned model dir: run one pooled self-training "
                    "round from it (tags), then score the result")
    ap.add_argument("--st-users", type=int, default=25, help="train users per dataset whose tag inputs the "
                    "self-training round answers")
    ap.add_argument("--k", type=int, default=4, help="answers per input in the self-training round")
    ap.add_argument("--label", default=None, help="the scored model's row label (default sft-logs, or "
                    "+ self-train)")
    ap.add_argument("--constrain", default=DEFAULT_CONSTRAIN, choices=CONSTRAIN_MODES,
                    help="predict-tags --constrain for the scored models (base and aligned)")
    ap.add_argument("--explore", type=int, default=EXPLORE, help="predict-tags --explore for the scored models")
    ap.add_argument("--history-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                    help="compress budget per user when scoring")
    ap.add_argument("--max-interests", type=int, default=bench_intent.BENCH_INTERESTS,
                    help="interests per user, in the logs samples and when scoring (mine-interests --max-interests)")
    ap.add_argument("--interest-rank", default=LogsConfig.interest_rank, choices=INTEREST_RANKS,
                    help="the logs samples' interests: a user's categories by count behind the newest engagement's, "
                    "by count, or by recency-weighted count")
    ap.add_argument("--phase", default="test", choices=("test", "valid"),
                    help="valid: score on the valid item with histories before it (to choose β; never test)")
    ap.add_argument("--no-base", action="store_true", help="leave out the raw model's rows (its tags are empty on "
                    "both datasets; on ml-100k's test phase it takes ~37 s a user to say so)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    bench_intent.PHASE = args.phase
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    names = args.datasets.split(",")
    model_dir = Path(args.model) if args.model else out / "model"
    label = args.label or "sft-logs"
    if args.self_train_from:
        model_dir, label = self_train_round(names, args, out), args.label or "+ self-train"
    elif args.model is None:
        samples = [s for name in names for s in build_samples(name, Path(args.work), out, args.per_task, 0,
                                                                 args.max_interests, args.interest_rank)]
        store = open_samples(out / "samples.duckdb")
        save_samples(store, samples)
        store.close()
        (out / "samples.jsonl").write_bytes(b"".join(orjson.dumps(s.to_json()) + b"\n" for s in samples))
        print(f"{len(samples)} samples -> {out / 'samples.jsonl'}", file=sys.stderr)
        if args.samples_only:
            return
        cfg = SFTConfig(**RECIPE, max_steps=args.steps, device=args.device)  # type: ignore[arg-type]
        r = train_sft(samples, model_dir, cfg, progress=lambda e: e["step"] % 10 == 0 and print(
            f"  step {e['step']}/{e['of']} loss {e['loss']:.3f} {e['tokens_per_s']:.0f} tok/s", file=sys.stderr))
        print(f"trained: {r.steps} steps, {r.train_s:.0f}s, loss {r.first_loss:.3f} -> {r.last_loss:.3f}",
              file=sys.stderr)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for name in names:
        # a merged model.gguf when the run exported one, else the dir (its adapter.gguf on the embedded model)
        served = str(model_dir / "model.gguf") if (model_dir / "model.gguf").exists() else str(model_dir)
        scored = score(name, args, served, args.work)
        aligned = [r for r in scored if r["source"] == "llm"]
        # the base model on the same users, DB and tower (its answers cached by bench_intent under --base-work);
        # --no-base keeps the non-LLM sources of the run above
        base_rows = ([r for r in scored if r["source"] != "llm"] if args.no_base
                     else score(name, args, None, args.base_work or args.work))
        for row in base_rows:
            if row["source"] == "llm":
                row["source"] = f"llm base [{args.constrain}]"
        for row in aligned:
            row["source"] = f"llm {label} [{args.constrain}]"
            row.update(train_s=manifest["train_s"], peak_memory_mb=manifest["peak_memory_mb"],
                       device=manifest["device"], steps=manifest["steps"], samples=manifest["samples"])
        results += [b for b in base_rows if "all users" not in b["source"] and b["source"] != "oracle"] + aligned
    console = Console(width=250)
    for t in tables(results):
        console.print(t)
    console.print(f"scoring {time.perf_counter() - started:.0f}s; model {model_dir}: {manifest['steps']} steps on "
                  f"{manifest['samples']} samples, {manifest['train_s']:.0f}s on {manifest['device']}, peak "
                  f"{manifest['peak_memory_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "manifest": manifest}, indent=1))


def tables(results: list[dict[str, Any]]) -> list[Table]:
    users = "/".join(sorted({str(r["users"]) for r in results if r.get("users")})) or "the"
    a = Table(title=f"Alignment on the intent bench (LOO {bench_intent.PHASE} phase, {users} held-out users per "
                    "dataset)")
    cols = ["dataset", "source", "hr@30", "tagitem_hit@50", "kept_share", "valid_share", "bad_reason_share",
            "interest_reason_grounded", "tag_reason_grounded", "interest_f1", "prompt_ceiling", "explore_tags",
            "llm_s_per_user"]
    for c in cols:
        a.add_column(c, justify="left" if c in ("dataset", "source") else "right")
    for r in results:
        a.add_row(*(bench_intent.fmt(r.get(c, float("nan"))) for c in cols))
    b = Table(title="TAR retrieval with those tags (beta = 1 ignores tags)")
    mcols = ["ndcg@10", "hit@10", "categorydiversity@10", "exploration@10", "giniindex@10"]
    for c in ["dataset", "source", "beta", *mcols]:
        b.add_column(c, justify="left" if c in ("dataset", "source") else "right")
    for r in results:
        if not r["source"].startswith("llm"):
            continue
        for beta in bench_intent.BETAS:
            m = r[f"beta={beta}"]
            b.add_row(r["dataset"], r["source"], str(beta), *(bench_intent.fmt(m[c]) for c in mcols))
    return [a, b]


if __name__ == "__main__":
    main()
