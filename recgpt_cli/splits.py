"""Train/validation/test splits of user–item interactions, made once, seeded, and stored in the DB (§2.3, issue 4).

Interactions are the distinct (user_id, item_id) pairs over item behaviours (every type but `search`), each
with its first timestamp. Two protocols:

- ``recbole`` (default): RecBole's default for general recommendation — per user, random order (RO), split
  by ratio 8/1/1 with RecBole's rounding (`split_counts`). Shuffling is a seeded md5 of (seed, user, item),
  so the split is the same on every machine.
- ``loo``: leave-one-out by time — per user the last interaction is test, the second-last validation, the
  rest train (one interaction: train only; two: train + test), as RecBole's ``LS: valid_and_test``.

The split lives in table ``splits`` plus one ``split_meta`` row per protocol, so `train-towers`, baselines,
`retrieve` and `evaluate` always agree on what is train, validation and test.

Example::

    from recgpt_cli.store import connect
    from recgpt_cli.splits import make_split, load_split
    with connect("shop.duckdb") as con:
        info = make_split(con, "recbole", seed=2020)     # idempotent: reuses the stored split
        data = load_split(con, "recbole")
    data.n_users, data.n_items                # all items in `items` (cold items are rankable)
    data.train.user, data.train.item          # int arrays; data.valid / data.test likewise
    indptr, indices = data.user_items("train")  # CSR of each user's train items
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import numpy as np

from recgpt_cli.errors import BadInput, RecgptError
from recgpt_cli.store import ensure_tables

Protocol = Literal["recbole", "loo"]
PROTOCOLS: tuple[str, ...] = ("recbole", "loo")
PHASES: tuple[str, ...] = ("train", "valid", "test")
SPLIT_ID_CHARS = 16  # 64 bits of the fingerprint: enough to tell two versions of one DB's split apart

SPLITS_DDL = """
CREATE TABLE IF NOT EXISTS splits (
    protocol VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    ts TIMESTAMP,
    split VARCHAR NOT NULL            -- 'train' | 'valid' | 'test'
);
CREATE TABLE IF NOT EXISTS split_meta (
    protocol VARCHAR PRIMARY KEY,
    seed BIGINT,
    ratios VARCHAR,                   -- JSON list, e.g. [0.8, 0.1, 0.1]
    n_rows BIGINT,
    n_train BIGINT,
    n_valid BIGINT,
    n_test BIGINT,
    created TIMESTAMP
);
"""

# Distinct (user, item) over item behaviours, first timestamp kept.
INTERACTIONS_SQL = """
SELECT user_id, item_id, min(ts) AS ts
FROM behaviors
WHERE item_id IS NOT NULL AND type <> 'search'
GROUP BY user_id, item_id
"""


@dataclass(frozen=True)
class SplitInfo:
    protocol: str
    seed: int
    ratios: tuple[float, float, float]
    n_rows: int
    n_train: int
    n_valid: int
    n_test: int
    reused: bool = False


@dataclass(frozen=True)
class Interactions:
    """One phase of a split as parallel integer arrays (indices into SplitData.user_ids / item_ids)."""

    user: np.ndarray  # int64
    item: np.ndarray  # int64
    ts: np.ndarray  # datetime64[us]

    def __len__(self) -> int:
        return int(self.user.shape[0])


@dataclass
class SplitData:
    """A stored split with dense integer ids. Items are ALL catalogue items, so cold items can be ranked."""

    protocol: str
    user_ids: list[str]
    item_ids: list[str]
    user_index: dict[str, int]
    item_index: dict[str, int]
    train: Interactions
    valid: Interactions
    test: Interactions
    _csr: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _memo: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def phase(self, name: str) -> Interactions:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; expected one of {PHASES}")
        return getattr(self, name)

    def user_items(self, *phases: str) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr[n_users+1], indices) of each user's items in the union of `phases` (default train).

        Items of user u are indices[indptr[u]:indptr[u+1]], sorted and unique."""
        phases = phases or ("train",)
        key = tuple(sorted(set(phases)))
        if key not in self._csr:
            users = np.concatenate([self.phase(p).user for p in key])
            items = np.concatenate([self.phase(p).item for p in key])
            self._csr[key] = _csr(users, items, self.n_users)
        return self._csr[key]

    def exclude_for(self, phase: str) -> tuple[np.ndarray, np.ndarray]:
        """Items to mask when ranking for `phase`: train for valid; train+valid for test (as RecBole)."""
        return self.user_items("train") if phase == "valid" else self.user_items("train", "valid")

    def fingerprint(self) -> str:
        """sha256 over the ids and every phase's (user, item) rows: a model stores it so that scoring it on a
        split other than the one it trained on (its train items would count as held-out hits) is refused. Computed
        once per loaded split: training, the readers and `split_id` all ask."""
        if "fingerprint" not in self._memo:
            h = hashlib.sha256(self.protocol.encode())
            for ids in (self.user_ids, self.item_ids):
                h.update("\x1f".join(ids).encode() + b"\x1e")
            for name in PHASES:
                ph = self.phase(name)
                h.update(name.encode() + ph.user.astype("<i8").tobytes() + ph.item.astype("<i8").tobytes())
            self._memo["fingerprint"] = h.hexdigest()
        return self._memo["fingerprint"]

    @property
    def split_id(self) -> str:
        """A short form of `fingerprint()` that LLM records carry (`compress --split`), so that output made from one
        version of the split is refused on another (a rebuild with another seed, or after an import)."""
        return self.fingerprint()[:SPLIT_ID_CHARS]

    def item_train_counts(self) -> np.ndarray:
        """Popularity of each item = its number of train interactions (RecBole's `data.count_items`)."""
        return np.bincount(self.train.item, minlength=self.n_items).astype(np.int64)


def _csr(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    if len(users):
        keep = np.ones(len(users), dtype=bool)
        keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
        users, items = users[keep], items[keep]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items.astype(np.int64)


def split_counts(total: int, ratios: tuple[float, ...] = (0.8, 0.1, 0.1)) -> list[int]:
    """Sizes of each part for one user, with RecBole's rounding (`Dataset._calcu_split_ids`).

    Every part but the first is rounded down; then, while the first part keeps more than one row, a later
    part whose exact share is in (0, 1) gets one row (test first, then valid). E.g. 10 → [8, 1, 1],
    5 → [3, 1, 1], 2 → [1, 0, 1], 1 → [1, 0, 0]."""
    tot_ratio = sum(ratios)
    shares = [r / tot_ratio for r in ratios]
    cnt = [int(s * total) for s in shares]
    cnt[0] = total - sum(cnt[1:])
    for i in range(1, len(shares)):
        if cnt[0] <= 1:
            break
        if 0 < shares[-i] * total < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


def _check_args(protocol: str, ratios: tuple[float, ...]) -> tuple[float, float, float]:
    if protocol not in PROTOCOLS:
        raise BadInput(f"unknown protocol {protocol!r}", f"use one of: {', '.join(PROTOCOLS)}")
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0 or ratios[0] <= 0:
        raise BadInput(f"bad split ratios {list(ratios)}", "give three numbers >= 0, train > 0, e.g. 0.8,0.1,0.1")
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


def _stored_meta(con: duckdb.DuckDBPyConnection, protocol: str) -> SplitInfo | None:
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if not {"splits", "split_meta"} <= tables:  # read-only DBs never got the tables
        return None
    row = con.execute(
        "SELECT seed, ratios, n_rows, n_train, n_valid, n_test FROM split_meta WHERE protocol = ?", [protocol]
    ).fetchone()
    if row is None:
        return None
    r = tuple(json.loads(row[1]))
    return SplitInfo(protocol, int(row[0]), r, int(row[2]), int(row[3]), int(row[4]), int(row[5]), reused=True)  # type: ignore[arg-type]


def refuse_other_seed(stored: SplitInfo | None, split_seed: int | None, fix: str) -> None:
    """An explicit --split-seed must be the stored recbole split's seed: a stage never quietly uses a split of
    another seed than the one asked for (loo is not seeded). `fix` says how to proceed otherwise."""
    if split_seed is not None and stored is not None and stored.protocol == "recbole" and stored.seed != split_seed:
        raise BadInput(f"--split-seed {split_seed}: this --db already holds a recbole split made with seed "
                       f"{stored.seed}", fix)


def make_split(
    con: duckdb.DuckDBPyConnection,
    protocol: str = "recbole",
    seed: int = 2020,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    force: bool = False,
) -> SplitInfo:
    """Make (once) and store the split for `protocol`; later calls with the same arguments reuse it.

    A stored split made with another seed/ratios, or over a different number of interactions (data
    imported since), raises BadInput unless `force`, which rebuilds it. `ratios`/`seed` only matter for
    ``recbole`` (``loo`` is deterministic by time, ties broken by item id)."""
    ratios = _check_args(protocol, ratios)
    ensure_tables(con, SPLITS_DDL)
    n_now = int(con.execute(f"SELECT count(*) FROM ({INTERACTIONS_SQL})").fetchone()[0])  # type: ignore[index]
    stored = _stored_meta(con, protocol)
    if stored is not None and not force:
        same_args = protocol == "loo" or (stored.seed == seed and np.allclose(stored.ratios, ratios))
        if not same_args:
            raise BadInput(
                f"a {protocol} split already exists with seed={stored.seed} ratios={list(stored.ratios)} "
                f"(asked seed={seed} ratios={list(ratios)})",
                "reuse the stored split (models trained on it stay comparable), "
                "or rebuild it: `recgpt train-towers --new-split --split-seed N`, then retrain the models",
            )
        check_fresh(con, stored, n_now)
        return stored
    if n_now == 0:
        raise BadInput("no item interactions in the DB (behaviors without item_id or only searches)",
                       "import behaviours first: recgpt import jsonl --db DB --behaviors FILE")
    if protocol == "recbole":
        select = _recbole_sql(con, seed, ratios)
    else:
        select = _loo_sql()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM splits WHERE protocol = ?", [protocol])
        con.execute("DELETE FROM split_meta WHERE protocol = ?", [protocol])
        con.execute(f"INSERT INTO splits SELECT ? AS protocol, user_id, item_id, ts, split FROM ({select})", [protocol])
        n = dict(
            con.execute("SELECT split, count(*) FROM splits WHERE protocol = ? GROUP BY split", [protocol]).fetchall()
        )
        info = SplitInfo(protocol, seed, ratios, n_now, n.get("train", 0), n.get("valid", 0), n.get("test", 0))
        con.execute(
            "INSERT INTO split_meta VALUES (?, ?, ?, ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
            [protocol, seed, json.dumps(list(ratios)), n_now, info.n_train, info.n_valid, info.n_test],
        )
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return info


def _recbole_sql(con: duckdb.DuckDBPyConnection, seed: int, ratios: tuple[float, float, float]) -> str:
    # Per-user sizes follow RecBole's rounding; it only depends on the user's count, so we tabulate it once
    # per distinct count (a few hundred rows) and let SQL join it back.
    totals = [int(r[0]) for r in con.execute(
        f"SELECT DISTINCT count(*) FROM ({INTERACTIONS_SQL}) GROUP BY user_id").fetchall()]
    con.execute("CREATE OR REPLACE TEMP TABLE _split_sizes (tot BIGINT, n_train BIGINT, n_valid BIGINT)")
    con.executemany("INSERT INTO _split_sizes VALUES (?, ?, ?)",
                    [[t, *split_counts(t, ratios)[:2]] for t in totals])
    return f"""
        WITH inter AS ({INTERACTIONS_SQL}),
        ordered AS (
            SELECT *, row_number() OVER (PARTITION BY user_id
                       ORDER BY md5('{int(seed)}|' || user_id || '|' || item_id), item_id) AS pos,
                   count(*) OVER (PARTITION BY user_id) AS tot
            FROM inter)
        SELECT o.user_id, o.item_id, o.ts,
               CASE WHEN o.pos <= s.n_train THEN 'train'
                    WHEN o.pos <= s.n_train + s.n_valid THEN 'valid' ELSE 'test' END AS split
        FROM ordered o JOIN _split_sizes s ON o.tot = s.tot
    """


def _loo_sql() -> str:
    # Latest first: 1 → test, 2 → valid; a user with 2 interactions gets train + test, with 1 train only.
    return f"""
        WITH inter AS ({INTERACTIONS_SQL}),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, item_id DESC) AS back,
                   count(*) OVER (PARTITION BY user_id) AS tot
            FROM inter)
        SELECT user_id, item_id, ts,
               CASE WHEN tot >= 2 AND back = 1 THEN 'test'
                    WHEN tot >= 3 AND back = 2 THEN 'valid' ELSE 'train' END AS split
        FROM ranked
    """


def leak_reason(split: str | None, phase: str | None, protocol: str, scored: str, *,
                split_id: str | None = None, current_id: str | None = None) -> str | None:
    """Why LLM output made from a history cut for (`split`, `phase`) must not be scored on `scored` of `protocol`,
    or None when it may (issue 8). A history for `valid` saw train only, one for `test` saw train + valid, and one
    without provenance saw everything. With `current_id` (the stored split's `SplitData.split_id`), the record's
    `split_id` must be it: a history cut for an earlier version of the split (another seed, or before an import)
    holds items that are valid or test now."""
    remake = f"make it from `recgpt compress --split {protocol} --phase {scored}`"
    if split is None or phase is None:
        return f"made from the full history, which holds the {scored} items being scored; {remake}"
    if phase not in ("valid", "test"):
        return f"marked phase {phase!r}, which no `recgpt compress --phase` writes (valid or test); {remake}"
    if split != protocol:
        return (f"made for the {split} split but scored on the {protocol} split, whose held-out items it may have "
                f"seen; make it with `recgpt compress --split {protocol} --phase {scored}`")
    if scored == "valid" and phase != "valid":
        return f"made for the {phase} phase, whose history holds the valid items; use --phase valid"
    if current_id is not None and split_id != current_id:
        if split_id is None:
            return (f"made without the split's id (an older recgpt, or edited), so which version of the {split} "
                    f"split its history saw cannot be checked; {remake}")
        return (f"made for another version of the {split} split (id {split_id}; this --db's is {current_id}: "
                f"rebuilt with another seed or after an import), whose valid/test items its history may hold; "
                f"{remake}")
    return None


def check_fresh(con: duckdb.DuckDBPyConnection, stored: SplitInfo, n_now: int | None = None) -> None:
    """Refuse a stored split made before behaviours were imported: the new interactions are in no phase."""
    if n_now is None:
        n_now = int(con.execute(f"SELECT count(*) FROM ({INTERACTIONS_SQL})").fetchone()[0])  # type: ignore[index]
    if stored.n_rows != n_now:
        raise BadInput(
            f"the stored {stored.protocol} split has {stored.n_rows} interactions but the DB now has {n_now}",
            "behaviours were imported after the split was made; rebuild it with "
            f"`recgpt train-towers --protocol {stored.protocol} --new-split` (models trained before must be retrained)",
        )


def stored_split_id(con: duckdb.DuckDBPyConnection, protocol: str) -> str:
    """The stored split's `split_id`; a split older than the DB's behaviours is refused (its new interactions are
    in no phase, so a history built on it would hold items that a rebuilt split may hold out)."""
    stored = split_info(con, protocol)
    if stored is None:
        raise BadInput(f"no {protocol} split in this DB",
                       f"make it first: `recgpt train-towers --protocol {protocol}` (or `recgpt compress --split`)")
    check_fresh(con, stored)
    return load_split(con, protocol).split_id


def split_info(con: duckdb.DuckDBPyConnection, protocol: str) -> SplitInfo | None:
    """The stored split's metadata, or None when none has been made."""
    return _stored_meta(con, protocol)


def load_split(con: duckdb.DuckDBPyConnection, protocol: str = "recbole") -> SplitData:
    """Load a stored split as integer-indexed arrays. Users = every user with an interaction (sorted by id);
    items = every row of `items` plus any interacted item missing from it (sorted by id)."""
    _check_args(protocol, (0.8, 0.1, 0.1))
    if _stored_meta(con, protocol) is None:
        raise RecgptError(
            f"no {protocol} split in this DB",
            f"make it first (recgpt train-towers / evaluate do it, or make_split(con, {protocol!r}))",
        )
    user_ids = [r[0] for r in con.execute(
        "SELECT DISTINCT user_id FROM splits WHERE protocol = ? ORDER BY user_id", [protocol]).fetchall()]
    item_ids = [r[0] for r in con.execute(
        "SELECT item_id FROM items UNION SELECT item_id FROM splits WHERE protocol = ? ORDER BY item_id",
        [protocol]).fetchall()]
    user_index = {u: i for i, u in enumerate(user_ids)}
    item_index = {v: i for i, v in enumerate(item_ids)}
    phases = {}
    for phase in PHASES:
        rows = con.execute(
            "SELECT user_id, item_id, ts FROM splits WHERE protocol = ? AND split = ? ORDER BY user_id, ts, item_id",
            [protocol, phase],
        ).fetchnumpy()
        users = np.fromiter((user_index[u] for u in rows["user_id"]), dtype=np.int64, count=len(rows["user_id"]))
        items = np.fromiter((item_index[v] for v in rows["item_id"]), dtype=np.int64, count=len(rows["item_id"]))
        phases[phase] = Interactions(users, items, np.asarray(rows["ts"], dtype="datetime64[us]"))
    return SplitData(protocol, user_ids, item_ids, user_index, item_index,
                     phases["train"], phases["valid"], phases["test"])


def ensure_split(con: duckdb.DuckDBPyConnection, protocol: str = "recbole", seed: int = 2020) -> SplitData:
    """Load the stored split of `protocol` (whatever its seed: models and baselines share it), making it (seeded)
    first if this DB has none; a split older than the DB's behaviours is refused."""
    stored = split_info(con, protocol)
    if stored is None:
        make_split(con, protocol, seed=seed)
    else:
        check_fresh(con, stored)
    return load_split(con, protocol)
