"""Run every benchmark in turn (`make bench`); each prints its own table. Speed/quality targets live here, never in
tests. Pass names to run a subset: `python bench/run_all.py import compress hnsw`.

The LLM, judge and retrieval benchmarks take minutes each on a 2-core machine; see bench/README.md for the
latest measured numbers and the exact commands.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["import", "compress", "hnsw", "tag_category", "llm", "shards", "judge", "baselines", "retrieval",
         "retrieval_ceiling", "intent", "hr_bound", "align"]


def main(names: list[str]) -> int:
    if {"-h", "--help"} & set(names):
        print(__doc__.strip() + f"\n\nusage: python bench/run_all.py [{' '.join(ORDER)}]")
        return 0
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or ORDER:
        print(f"\n== bench_{name}.py ==", flush=True)
        started = time.perf_counter()
        rc = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py")]).returncode
        print(f"(bench_{name}.py: exit {rc}, {time.perf_counter() - started:.0f}s)", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
