"""Scale-out by shards (README, "Scale out"): the LLM stages over the same users as one worker and as N workers
(`compress --shard K/N | mine-interests - | predict-tags -`, started at once, each with its own cache), with the
embedded model. Prints wall time and users/minute per row and checks that the shards' records, put together, are
the one worker's records exactly.

    python bench/bench_shards.py [--users 8] [--workers 2] [--work DIR]

On a machine with C cores the embedded model generates on C - 1 threads and evaluates prompts on C
(`llm.llama_cpp_backend`); the workers here run with RECGPT_THREADS = max(1, C // N) each, which bounds both, and
the one-worker row with the default.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recgpt_cli.importers import import_jsonl  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402


def pipeline(db: Path, users: str, cache: Path, shard: str | None) -> str:
    py = f"{sys.executable} -m recgpt_cli"
    llm = f"--cache-dir {cache} --quiet"
    part = f"--shard {shard}" if shard else ""
    return (f"set -o pipefail; {py} compress --db {db} --users {users} --split recbole --phase test {part} --quiet "
            f"| {py} mine-interests - {llm} | {py} predict-tags - --db {db} {llm}")


def run(cmds: list[str], threads: int | None) -> tuple[float, list[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if threads:
        env["RECGPT_THREADS"] = str(threads)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["bash", "-c", c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for c in cmds]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"worker failed ({p.returncode}): {err.decode()[-2000:]}")
    return wall, [o for o, _ in outs]


def records(blobs: list[bytes]) -> list[dict]:
    rows = [orjson.loads(x) for b in blobs for x in b.splitlines() if x.strip()]
    return sorted(rows, key=lambda r: r["user_id"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=8, help="the first N users of sample_data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-shards-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "sample.duckdb"
    if not db.exists():
        con = open_db(db)
        sd = ROOT / "sample_data"
        import_jsonl(con, users=sd / "users.jsonl", items=sd / "items.jsonl", behaviors=sd / "behaviors.jsonl")
        con.close()
    users = ",".join(f"u{i:03d}" for i in range(1, args.users + 1))
    cores = len(os.sched_getaffinity(0))
    per_worker = max(1, cores // args.workers)
    one_s, one = run([pipeline(db, users, work / "cache-one", None)], None)
    many_s, many = run([pipeline(db, users, work / f"cache-{k}", f"{k}/{args.workers}")
                        for k in range(args.workers)], per_worker)
    same = records(one) == records(many)
    table = Table(title=f"mine-interests + predict-tags, {args.users} sample_data users, embedded model, "
                        f"{cores} cores")
    for col in ("workers", "threads each", "wall s", "users/min", "records as one worker's"):
        table.add_column(col, justify="right")
    table.add_row("1", os.environ.get("RECGPT_THREADS") or f"{max(1, cores - 1)} ({cores} for prompts)", f"{one_s:.1f}",
                  f"{60 * args.users / one_s:.1f}", "—")
    table.add_row(str(args.workers), str(per_worker), f"{many_s:.1f}", f"{60 * args.users / many_s:.1f}",
                  "yes" if same else "NO")
    Console().print(table)
    if not same:
        raise SystemExit("the shards' records differ from the one worker's")


if __name__ == "__main__":
    main()
