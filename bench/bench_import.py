"""Import speed: `recgpt import` on ml-1m-sized data (synthetic, 1M ratings), ml-100k (RecBole) and JSONL.

ml-1m itself is not available offline, so we synthesise its three files in its exact format (`::`, latin-1 titles,
age/occupation codes) with a seeded generator. Run: `python bench/bench_import.py [--ratings N] [--seed S]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.datasets import ml100k_dir  # noqa: E402
from recgpt_cli.importers import ImportReport, import_jsonl, import_movielens, import_recbole  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402

GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")  # fmt: skip
AGES = (1, 18, 25, 35, 45, 50, 56)


def synth_ml1m(folder: Path, n_ratings: int, seed: int, n_users: int = 6040, n_items: int = 3706) -> None:
    """ratings.dat / movies.dat / users.dat in ml-1m's format, popularity-skewed like the real set."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "movies.dat").open("w", encoding="latin-1") as fh:
        for i in range(1, n_items + 1):
            k = int(rng.integers(1, 4))
            genres = "|".join(sorted(rng.choice(GENRES, size=k, replace=False)))
            title = f"Movie {i}{' é' if i % 97 == 0 else ''} ({int(rng.integers(1919, 2001))})"
            fh.write(f"{i}::{title}::{genres}\n")
    with (folder / "users.dat").open("w") as fh:
        for u in range(1, n_users + 1):
            gender, age = "MF"[int(rng.integers(0, 2))], AGES[int(rng.integers(0, 7))]
            fh.write(f"{u}::{gender}::{age}::{int(rng.integers(0, 21))}::{int(rng.integers(10000, 99999))}\n")
    users = rng.integers(1, n_users + 1, size=n_ratings)
    items = np.minimum(rng.zipf(1.3, size=n_ratings), n_items)  # a few blockbusters, a long tail
    ratings = rng.choice([1, 2, 3, 4, 5], size=n_ratings, p=[0.06, 0.11, 0.26, 0.35, 0.22])
    ts = rng.integers(956_703_932, 1_046_454_590, size=n_ratings)
    lines = "\n".join(f"{u}::{i}::{r}::{t}" for u, i, r, t in zip(users, items, ratings, ts, strict=True))
    (folder / "ratings.dat").write_text(lines + "\n")


def export_jsonl(db: Path, folder: Path) -> dict[str, Path]:
    """Dump a store's tables as the JSONL import format (to time the validated JSONL path)."""
    con = open_db(db, read_only=True)
    paths = {t: folder / f"{t}.jsonl" for t in ("users", "items", "behaviors")}
    with paths["users"].open("wb") as fh:
        for uid, attrs in con.execute("SELECT user_id, attributes FROM users").fetchall():
            fh.write(orjson.dumps({"user_id": uid, "attributes": orjson.loads(attrs)}) + b"\n")
    with paths["items"].open("wb") as fh:
        for iid, title, path, extra in con.execute("SELECT item_id, title, category_path, extra FROM items").fetchall():
            fh.write(orjson.dumps({"item_id": iid, "title": title, "category": path, "extra": orjson.loads(extra)}))
            fh.write(b"\n")
    with paths["behaviors"].open("wb") as fh:
        q = "SELECT user_id, item_id, type, epoch(ts)::BIGINT FROM behaviors"
        for uid, iid, kind, ts in con.execute(q).fetchall():
            fh.write(orjson.dumps({"user_id": uid, "item_id": iid, "type": kind, "timestamp": ts}) + b"\n")
    con.close()
    return paths


def timed(db: Path, load: Callable) -> ImportReport:
    con = open_db(db)
    try:
        return load(con)
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ratings", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console(width=120)
    results: list[tuple[str, str, ImportReport]] = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        t = Path(tmp)
        synth_ml1m(t / "ml-1m", args.ratings, args.seed)
        db = t / "ml1m.duckdb"
        results.append(("ml-1m synthetic", "import movielens", timed(db, lambda c: import_movielens(c, t / "ml-1m"))))
        results.append(
            ("ml-1m synthetic", "re-import (all duplicates)", timed(db, lambda c: import_movielens(c, t / "ml-1m")))
        )
        db = t / "ml100k.duckdb"
        results.append(("ml-100k", "import recbole", timed(db, lambda c: import_recbole(c, ml100k_dir()))))
        paths = export_jsonl(db, t)
        results.append(("ml-100k as JSONL", "import jsonl", timed(t / "j.duckdb", lambda c: import_jsonl(c, **paths))))
    table = Table(title="recgpt import speed")
    for col in ("data", "command", "behaviours", "users", "items", "seconds", "behaviours/s"):
        table.add_column(col, justify="left" if col in ("data", "command") else "right")
    for data, cmd, r in results:
        n = r.behaviors.inserted + r.behaviors.duplicates
        table.add_row(
            data, cmd, f"{n:,}", f"{r.users.inserted + r.users_created + r.users.duplicates:,}",
            f"{r.items.inserted + r.items.duplicates:,}", f"{r.seconds:.2f}", f"{n / r.seconds:,.0f}",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
