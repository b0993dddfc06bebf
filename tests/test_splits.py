"""Splits: RecBole's ratio rounding, leave-one-out without temporal leakage, seeded and stored once."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from recgpt_cli.errors import BadInput, RecgptError
from recgpt_cli.splits import load_split, make_split, split_counts, split_info
from recgpt_cli.store import open_db


def _db(tmp_path, n_per_user=(10, 5, 3, 2, 1, 20), with_search=True):
    con = open_db(tmp_path / "t.duckdb")
    n_items = 30
    con.executemany("INSERT INTO items (item_id, title, category_leaf) VALUES (?, ?, ?)",
                    [[f"i{j:02d}", f"item {j}", f"c{j % 3}"] for j in range(n_items)])
    t0 = datetime(2025, 1, 1)
    rows = []
    for u, n in enumerate(n_per_user):
        for j in range(n):
            item = f"i{(u * 7 + j) % n_items:02d}"
            rows.append([f"u{u}", item, None, "click", t0 + timedelta(hours=u * 100 + j)])
            rows.append([f"u{u}", item, None, "purchase", t0 + timedelta(hours=u * 100 + j, minutes=30)])  # dup pair
        if with_search:
            rows.append([f"u{u}", None, "shoes", "search", t0])
    con.executemany("INSERT INTO behaviors (user_id, item_id, query, type, ts) VALUES (?, ?, ?, ?, ?)", rows)
    return con


@pytest.mark.parametrize(
    "total,expected",
    [(10, [8, 1, 1]), (20, [16, 2, 2]), (5, [3, 1, 1]), (3, [1, 1, 1]), (2, [1, 0, 1]), (1, [1, 0, 0]),
     (19, [17, 1, 1]), (30, [24, 3, 3]), (0, [0, 0, 0])],
)
def test_split_counts_follow_recbole_rounding(total, expected):
    assert split_counts(total) == expected


def test_recbole_split_sizes_and_determinism(tmp_path):
    con = _db(tmp_path)
    info = make_split(con, "recbole", seed=7)
    assert (info.n_rows, info.n_train, info.n_valid, info.n_test) == (41, 8 + 3 + 1 + 1 + 1 + 16, 1 + 1 + 1 + 0 + 0 + 2,
                                                                      1 + 1 + 1 + 1 + 0 + 2)
    per_user = dict(((u, s), n) for u, s, n in con.execute(
        "SELECT user_id, split, count(*) FROM splits WHERE protocol='recbole' GROUP BY ALL").fetchall())
    assert per_user[("u0", "train")] == 8 and per_user[("u5", "test")] == 2 and ("u4", "test") not in per_user
    first = con.execute("SELECT user_id, item_id, split FROM splits ORDER BY ALL").fetchall()
    # same seed in a fresh DB: same split; another seed: a different one
    con2 = _db(tmp_path / "b")
    make_split(con2, "recbole", seed=7)
    assert con2.execute("SELECT user_id, item_id, split FROM splits ORDER BY ALL").fetchall() == first
    make_split(con2, "recbole", seed=8, force=True)
    assert con2.execute("SELECT user_id, item_id, split FROM splits ORDER BY ALL").fetchall() != first


def test_split_is_reused_and_conflicts_are_errors(tmp_path):
    con = _db(tmp_path)
    make_split(con, "recbole", seed=1)
    again = make_split(con, "recbole", seed=1)
    assert again.reused and split_info(con, "recbole").seed == 1
    with pytest.raises(BadInput, match="seed=1"):
        make_split(con, "recbole", seed=2)
    with pytest.raises(BadInput, match="ratios"):
        make_split(con, "recbole", seed=1, ratios=(0.7, 0.2, 0.1))
    con.execute("INSERT INTO behaviors (user_id, item_id, type, ts) VALUES ('u9', 'i01', 'click', '2025-02-01')")
    with pytest.raises(BadInput, match="DB now has 42"):
        make_split(con, "recbole", seed=1)
    assert make_split(con, "recbole", seed=1, force=True).n_rows == 42
    with pytest.raises(BadInput, match="protocol"):
        make_split(con, "random")
    with pytest.raises(RecgptError, match="no loo split"):
        load_split(con, "loo")


def test_loo_has_no_temporal_leakage(tmp_path):
    con = _db(tmp_path)
    info = make_split(con, "loo")
    # users with >= 3 interactions: 1 valid + 1 test; with 2: test only; with 1: train only
    assert (info.n_valid, info.n_test) == (4, 5)
    data = load_split(con, "loo")
    for u in range(data.n_users):
        tr = data.train.ts[data.train.user == u]
        va = data.valid.ts[data.valid.user == u]
        te = data.test.ts[data.test.user == u]
        if len(te):
            assert te.min() >= tr.max() and (not len(va) or (va.min() >= tr.max() and te.min() >= va.max()))
    # the first timestamp of a (user,item) pair is kept: the click, not the later purchase
    assert con.execute("SELECT min(minute(ts)) = 0 AND max(minute(ts)) = 0 FROM splits").fetchone()[0]


def test_load_split_indexes_all_items_and_builds_csr(tmp_path):
    con = _db(tmp_path)
    con.execute("INSERT INTO items (item_id, title) VALUES ('zz-cold', 'never seen')")
    make_split(con, "recbole", seed=3)
    data = load_split(con, "recbole")
    assert data.n_items == 31 and data.item_ids[-1] == "zz-cold" and data.n_users == 6
    assert len(data.train) + len(data.valid) + len(data.test) == 41
    indptr, indices = data.user_items("train")
    assert indptr[-1] == len(data.train) and np.all(np.diff(indptr) >= 0)
    u0 = data.user_index["u0"]
    assert set(indices[indptr[u0]:indptr[u0 + 1]]) == set(data.train.item[data.train.user == u0])
    ex_ptr, _ = data.exclude_for("test")
    assert ex_ptr[-1] == len(data.train) + len(data.valid)
    assert data.item_train_counts().sum() == len(data.train)
