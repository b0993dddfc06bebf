"""Tiny synthetic shop for tower/retrieval tests: 4 categories x 10 items; each user shops in one category."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from recgpt_cli.store import open_db

CATEGORIES = ["shoes", "tents", "coffee", "books"]


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a shared CI box (minutes -> seconds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_shop_db(path: Path, n_users: int = 24, per_user: int = 8) -> duckdb.DuckDBPyConnection:
    con = open_db(path)
    items = []
    for c, cat in enumerate(CATEGORIES):
        for j in range(10):
            items.append([f"{cat}-{j}", f"{cat} model {j}", ["outdoor" if c < 2 else "home", cat], cat,
                          f"brand{j % 3}", 10.0 + j, 100 * j])
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", items)
    t0 = datetime(2025, 1, 1)
    rows = []
    for u in range(n_users):
        cat = CATEGORIES[u % len(CATEGORIES)]
        con.execute("INSERT INTO users VALUES (?, '{}')", [f"u{u:02d}"])
        for k in range(per_user):
            j = (u + 3 * k) % 10
            kind = "purchase" if k % 3 == 0 else "click"
            rows.append([f"u{u:02d}", f"{cat}-{j}", None, kind, t0 + timedelta(days=k, hours=u), None])
    con.executemany("INSERT INTO behaviors VALUES (?, ?, ?, ?, ?, ?)", rows)
    return con


def assert_resumes_like_uninterrupted(con: duckdb.DuckDBPyConnection, tmp_path: Path, cfg: dict, kill_at: int) -> None:
    """Train `cfg` once straight through and once killed after epoch `kill_at` then rerun: same losses."""
    from recgpt_cli.towers import TowerConfig, train_towers

    full = train_towers(con, tmp_path / "full", TowerConfig(**cfg))

    def kill(epoch: int) -> None:
        if epoch == kill_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_towers(con, tmp_path / "killed", TowerConfig(**cfg), after_epoch=kill)
    from recgpt_cli.errors import BadInput
    from recgpt_cli.towers import load_model

    with pytest.raises(BadInput, match="its training did not finish"):  # not served as if it were the model
        load_model(tmp_path / "killed")
    resumed = train_towers(con, tmp_path / "killed", TowerConfig(**cfg))
    load_model(tmp_path / "killed")
    assert resumed.resumed_from_epoch == kill_at
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-5)


def top_item_in_own_category(scores: torch.Tensor, split) -> float:  # type: ignore[no-untyped-def]
    """Share of users whose best-scored item is in the one category they shop in (the shop fixture's design)."""
    cat_of = [split.item_ids[i].split("-")[0] for i in scores.argmax(1).numpy()]
    users_cat = [CATEGORIES[int(u[1:]) % 4] for u in split.user_ids]
    return float(np.mean([a == b for a, b in zip(cat_of, users_cat, strict=True)]))


def assert_hnsw_serves_like_exact(model) -> None:  # type: ignore[no-untyped-def]
    """Still a tower: hnswlib retrieval with beta fusion serves the model and agrees with exact search."""
    from recgpt_cli.retrieve import Tag, rank_users

    users = np.arange(4)
    tags = {int(u): [Tag("coffee")] for u in users}
    hnsw = dict(rank_users(model, users, tags, beta=0.5, k=5))
    exact = dict(rank_users(model, users, tags, beta=0.5, k=5, exact=True))
    assert all(len(hnsw[int(u)]) == 5 for u in users)
    assert [[h.item for h in hnsw[int(u)]] for u in users] == [[h.item for h in exact[int(u)]] for u in users]
