"""Shared machinery of every importer: staging tables, bulk CSV reads, and the merge into the core tables.

Each importer fills three TEMP tables (`_imp_users`, `_imp_items`, `_imp_behaviors`) in bulk through DuckDB, runs
the row checks (`check_ids`, `check_dangling_items`, ...), then `merge_staged` de-duplicates, upserts users/items by
id and anti-joins behaviours, all inside the caller's transaction so a failed import leaves the database as it was.
Rejected rows keep their input line as written, so a fixed line can be imported again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from recgpt_cli.errors import BadInput
from recgpt_cli.io import Rejects, rejects_path_for

STAGING_DDL = """
CREATE OR REPLACE TEMP TABLE _imp_users (user_id VARCHAR, attributes JSON, line BIGINT);
CREATE OR REPLACE TEMP TABLE _imp_items (
    item_id VARCHAR, title VARCHAR, category_path VARCHAR[], brand VARCHAR, price DOUBLE, sales BIGINT,
    extra JSON, line BIGINT
);
CREATE OR REPLACE TEMP TABLE _imp_behaviors (
    user_id VARCHAR, item_id VARCHAR, query VARCHAR, type VARCHAR, ts TIMESTAMP, value DOUBLE, line BIGINT
);
"""

STAGING_TABLES = ("_imp_users", "_imp_items", "_imp_behaviors", "_imp_dup", "_imp_u", "_imp_i", "_imp_b")


def check_rating_threshold(value: float) -> None:
    """--rating-threshold must be a number the importers' SQL can compare ratings with (nan or inf would reach the
    SQL text as a column name)."""
    if not math.isfinite(value):
        raise BadInput(f"--rating-threshold {value}: expected a finite number")


# Epoch seconds a timestamp may hold: years 1..9999, what every later stage (and Python's datetime) can read.
MIN_EPOCH_S = -62_135_596_800
MAX_EPOCH_S = 253_402_300_799


def epoch_seconds_sql(expr: str) -> str:
    """SQL turning epoch seconds (any numeric or text column) into a TIMESTAMP, or NULL when the value is not a
    number or lies outside years 1..9999 (`check_required` then reports the row instead of DuckDB failing)."""
    secs = f"TRY_CAST({expr} AS DOUBLE)"
    return (f"CASE WHEN {secs} BETWEEN {MIN_EPOCH_S} AND {MAX_EPOCH_S} "
            f"THEN make_timestamp(CAST(round({secs} * 1000000) AS BIGINT)) END")


# Behaviours are the same event when all of these match (NULL matches NULL).
BEHAVIOR_KEY = ("user_id", "item_id", "query", "type", "ts", "value")


@dataclass
class TableCounts:
    """What happened to one table's input rows."""

    inserted: int = 0
    updated: int = 0  # users/items whose id existed with different content
    duplicates: int = 0  # already in the DB unchanged, or repeated within this import
    rejected: int = 0  # bad rows skipped under skip_bad (written to the rejects file)


@dataclass
class ImportReport:
    """Counts per core table, users/items created implicitly, rejects and timing of one import."""

    source: str
    users: TableCounts = field(default_factory=TableCounts)
    items: TableCounts = field(default_factory=TableCounts)
    behaviors: TableCounts = field(default_factory=TableCounts)
    users_created: int = 0  # users only seen in behaviours, created with empty attributes
    items_created: int = 0  # items only seen in behaviours (RecBole without .item), titled by their id
    rejects_path: Path | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.users.rejected + self.items.rejected + self.behaviors.rejected

    def as_dict(self) -> dict[str, Any]:
        tables = {t: vars(getattr(self, t)).copy() for t in ("users", "items", "behaviors")}
        return {
            "source": self.source,
            **tables,
            "users_created": self.users_created,
            "items_created": self.items_created,
            "rejected": self.rejected,
            "rejects_path": str(self.rejects_path) if self.rejects_path else None,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


@dataclass
class StagedSource:
    """Where a staging table's rows came from, to point errors at `file:line`.

    `line` in the staging table is the file line for JSONL; for CSV-like files it is the row ordinal and
    `locate` maps ordinals to file lines (a file scan, only done when there is something to report).
    `path` (default: `name`) is the file rejected lines are read back from, so the rejects keep them as written."""

    name: str
    locate: Callable[[Sequence[int]], list[int]] = field(default=lambda keys: list(keys))
    path: Path | None = None
    encoding: str = "utf-8"
    rejects: Rejects = field(init=False)

    def __post_init__(self) -> None:
        self.rejects = Rejects(self.name)

    def raw_lines(self, lines: Sequence[int]) -> list[str]:
        """The text of these 1-based file lines, as written."""
        return read_lines(self.path or Path(self.name), lines, self.encoding)


def read_lines(path: Path, lines: Sequence[int], encoding: str = "utf-8") -> list[str]:
    """The text of 1-based `lines` of `path`, line ending removed (one scan; error paths only)."""
    wanted = set(lines)
    found: dict[int, str] = {}
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno in wanted:
                found[lineno] = raw.decode(encoding, "replace").rstrip("\r\n")
                if len(found) == len(wanted):
                    break
    return [found.get(n, "") for n in lines]


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def create_staging(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(STAGING_DDL)


def drop_staging(con: duckdb.DuckDBPyConnection) -> None:
    for t in STAGING_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {t}")


def sql_str(value: str | Path) -> str:
    """A SQL string literal (DuckDB table functions take file names as literals)."""
    return "'" + str(value).replace("'", "''") + "'"


# ---------------------------------------------------------------- CSV-like files (RecBole, MovieLens)


def ordinal(table: str) -> str:
    """SQL for a row's 0-based data-row ordinal in a table filled by `read_delimited`."""
    return f"(rowid - (SELECT min(rowid) FROM {table}))"


def read_delimited(
    con: duckdb.DuckDBPyConnection,
    table: str,
    path: Path,
    columns: dict[str, str],
    *,
    delim: str,
    skip: int = 0,
    encoding: str = "utf-8",
    skip_bad: bool,
    rejects: Rejects,
) -> None:
    """Bulk-read a delimited file into TEMP `table` (row order kept, so rowid - min(rowid) is the
    data-row ordinal; rowids of rows created inside a transaction start at a large base).

    Rows DuckDB cannot parse (wrong column count, bad numbers, bad encoding) raise `file:line` BadInput, or
    under skip_bad go to `rejects` with their exact line."""
    cols = ", ".join(f"{sql_str(k)}: {sql_str(v)}" for k, v in columns.items())
    rej = f"{table}_rej"
    con.execute(f"DROP TABLE IF EXISTS {rej}; DROP TABLE IF EXISTS {rej}_scan")
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_csv({sql_str(path)}, "
            f"delim={sql_str(delim)}, header=false, skip={skip}, auto_detect=false, quote='', escape='', "
            f"encoding={sql_str(encoding)}, columns={{{cols}}}, "
            f"store_rejects=true, rejects_table={sql_str(rej)}, rejects_scan={sql_str(rej + '_scan')})"
        )
    except duckdb.Error as exc:
        raise BadInput(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    bad = con.execute(
        f"SELECT line, first(error_message ORDER BY column_idx), first(csv_line) FROM {rej} GROUP BY line ORDER BY line"
    ).fetchall()
    con.execute(f"DROP TABLE IF EXISTS {rej}; DROP TABLE IF EXISTS {rej}_scan")
    if bad and not skip_bad:
        line, msg, _ = bad[0]
        raise BadInput.at(str(path), int(line), _plain_csv_error(msg))
    for line, msg, raw in bad:
        rejects.add(int(line), _plain_csv_error(msg), (raw or "").strip("\r\n"))


def _plain_csv_error(msg: str) -> str:
    msg = msg.replace("Expected Number of Columns", "expected columns").replace("Found", "found")
    return msg.replace("Error when converting column", "bad value in column")


def data_line_locator(path: Path, *, skip: int, rejects: Rejects) -> Callable[[Sequence[int]], list[int]]:
    """Map data-row ordinals (0-based, as staged) back to 1-based file lines: skip header lines, blank
    lines and lines DuckDB rejected (call right after `read_delimited`). Only used on error paths, so a
    Python scan of the file is fine."""
    unparsed = {r["line"] for r in rejects.rows}  # snapshot: later (semantic) rejects were staged rows

    def locate(ordinals: Sequence[int]) -> list[int]:
        wanted = sorted(set(ordinals))
        found: dict[int, int] = {}
        k = 0
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if lineno <= skip or not raw.strip() or lineno in unparsed:
                    continue
                if k == wanted[len(found)]:
                    found[k] = lineno
                    if len(found) == len(wanted):
                        break
                k += 1
        return [found.get(o, o + skip + 1) for o in ordinals]

    return locate


# ---------------------------------------------------------------- checks and merge


def reject_or_raise(
    con: duckdb.DuckDBPyConnection,
    table: str,
    where: str,
    message_sql: str,
    source: StagedSource,
    *,
    skip_bad: bool,
    counts: TableCounts,
) -> None:
    """Rows of staging `table` matching `where` are bad: raise at the first one's file:line, or (skip_bad)
    move them all to the rejects and delete them."""
    found = con.execute(
        f"SELECT line, {message_sql} FROM {table} WHERE {where} ORDER BY line{'' if skip_bad else ' LIMIT 1'}"
    ).fetchall()
    if not found:
        return
    lines = source.locate([int(r[0]) for r in found])
    _reject(con, table, where, [(n, str(r[1])) for n, r in zip(lines, found, strict=True)], source, skip_bad, counts)


def _reject(
    con: duckdb.DuckDBPyConnection,
    table: str,
    where: str,
    bad: list[tuple[int, str]],
    source: StagedSource,
    skip_bad: bool,
    counts: TableCounts,
) -> None:
    """`bad` = (file line, message) of the staged rows `where` selects, in line order: raise at the first, or
    (skip_bad) keep each input line as written in the rejects, so it can be fixed and imported again."""
    if not skip_bad:
        raise BadInput.at(source.name, *bad[0])
    for (line, msg), raw in zip(bad, source.raw_lines([line for line, _ in bad]), strict=True):
        source.rejects.add(line, msg, raw)
    counts.rejected += len(bad)
    con.execute(f"DELETE FROM {table} WHERE {where}")


# What makes two staged rows with the same id the same record (JSON compared as text, as the upsert does).
_CONTENT = {
    "users": "attributes::VARCHAR",
    "items": "row(title, category_path, brand, price, sales, extra::VARCHAR)",
}


def check_ids(
    con: duckdb.DuckDBPyConnection, table: str, source: StagedSource, report: ImportReport, *, skip_bad: bool
) -> None:
    """Ids of staged users/items (`table` is "users" or "items"): an empty id is bad input, and so is an id
    repeated with different content, which would otherwise leave one of the rows silently lost. An exact
    repeat stays (`merge_staged` counts it as a duplicate). Every importer calls this for every id table."""
    id_col = "user_id" if table == "users" else "item_id"
    staged = f"_imp_{table}"
    counts = getattr(report, table)
    reject_or_raise(
        con,
        staged,
        f"{id_col} IS NULL",
        f"'missing {id_col.replace('_', ' ')}'",
        source,
        skip_bad=skip_bad,
        counts=counts,
    )
    content = _CONTENT[table]
    # Each later row is compared with the first one for its id: that is the row the import keeps.
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _imp_dup AS SELECT line, id, first_line FROM ("
        f"SELECT line, {id_col} AS id, {content} AS content, first_value(line) OVER w AS first_line, "
        f"first_value({content}) OVER w AS first_content FROM {staged} "
        f"WINDOW w AS (PARTITION BY {id_col} ORDER BY line)) WHERE content IS DISTINCT FROM first_content"
    )
    found = con.execute("SELECT line, id, first_line FROM _imp_dup ORDER BY line").fetchall()
    if not found:
        return
    located = source.locate([int(r[0]) for r in found] + [int(r[2]) for r in found])
    bad = [
        (line, f"duplicate {id_col} {r[1]!r} with different content (first at line {first})")
        for line, first, r in zip(located[: len(found)], located[len(found) :], found, strict=True)
    ]
    _reject(con, staged, "line IN (SELECT line FROM _imp_dup)", bad, source, skip_bad, counts)


def check_dangling_items(
    con: duckdb.DuckDBPyConnection, source: StagedSource, report: ImportReport, *, skip_bad: bool
) -> None:
    """A behaviour naming an item that is in neither the DB nor this import is bad input."""
    reject_or_raise(
        con,
        "_imp_behaviors",
        "item_id IS NOT NULL AND item_id NOT IN (SELECT item_id FROM items) "
        "AND item_id NOT IN (SELECT item_id FROM _imp_items WHERE item_id IS NOT NULL)",
        "'item_id ' || to_json(item_id)::VARCHAR || ' is in neither the database nor this import'",
        source,
        skip_bad=skip_bad,
        counts=report.behaviors,
    )


def check_required(con: duckdb.DuckDBPyConnection, source: StagedSource, report: ImportReport, skip_bad: bool) -> None:
    """Empty ids or timestamps parse as NULL, so do out-of-range timestamps (`epoch_seconds_sql`); they are bad
    rows, like a malformed line."""
    reject_or_raise(
        con,
        "_imp_behaviors",
        "user_id IS NULL OR item_id IS NULL OR ts IS NULL",
        "'missing ' || CASE WHEN user_id IS NULL THEN 'user id' WHEN item_id IS NULL THEN 'item id' "
        "ELSE 'timestamp (or one outside years 1..9999 in epoch seconds)' END",
        source,
        skip_bad=skip_bad,
        counts=report.behaviors,
    )


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(sql).fetchall()  # fetchall: DuckDB 2 refuses con.sql() after a half-read result
    return int(rows[0][0]) if rows else 0


def merge_staged(con: duckdb.DuckDBPyConnection, report: ImportReport) -> None:
    """Upsert staged users/items by id, insert new behaviours, create users only seen in behaviours.

    Rows repeating an id within one import are identical by now (`check_ids`): one is kept, the others count
    as duplicates."""
    # Users: one row per id, then insert new ids / update changed ones.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _imp_u AS SELECT user_id, attributes FROM _imp_users "
        "QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY line DESC) = 1"
    )
    staged = _count(con, "SELECT count(*) FROM _imp_users")
    unique = _count(con, "SELECT count(*) FROM _imp_u")
    changed = "u.attributes::VARCHAR IS DISTINCT FROM s.attributes::VARCHAR"
    report.users.updated += _count(con, f"SELECT count(*) FROM _imp_u s JOIN users u USING (user_id) WHERE {changed}")
    report.users.duplicates += (
        staged
        - unique
        + _count(con, f"SELECT count(*) FROM _imp_u s JOIN users u USING (user_id) WHERE NOT ({changed})")
    )
    con.execute(f"UPDATE users u SET attributes = s.attributes FROM _imp_u s WHERE u.user_id = s.user_id AND {changed}")
    new_users = "FROM _imp_u s WHERE s.user_id NOT IN (SELECT user_id FROM users)"
    report.users.inserted += _count(con, f"SELECT count(*) {new_users}")
    con.execute(f"INSERT INTO users SELECT s.user_id, s.attributes {new_users} ORDER BY s.user_id")

    # Items: same, over every column.
    item_cols = ("title", "category_path", "category_leaf", "brand", "price", "sales", "extra")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _imp_i AS SELECT item_id, title, category_path, "
        "category_path[-1] AS category_leaf, brand, price, sales, extra FROM _imp_items "
        "QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY line DESC) = 1"
    )
    staged = _count(con, "SELECT count(*) FROM _imp_items")
    unique = _count(con, "SELECT count(*) FROM _imp_i")
    changed = " OR ".join(
        f"i.{c}::VARCHAR IS DISTINCT FROM s.{c}::VARCHAR" if c == "extra" else f"i.{c} IS DISTINCT FROM s.{c}"
        for c in item_cols
    )
    report.items.updated += _count(con, f"SELECT count(*) FROM _imp_i s JOIN items i USING (item_id) WHERE {changed}")
    report.items.duplicates += (
        staged
        - unique
        + _count(con, f"SELECT count(*) FROM _imp_i s JOIN items i USING (item_id) WHERE NOT ({changed})")
    )
    sets = ", ".join(f"{c} = s.{c}" for c in item_cols)
    con.execute(f"UPDATE items i SET {sets} FROM _imp_i s WHERE i.item_id = s.item_id AND ({changed})")
    new_items = "FROM _imp_i s WHERE s.item_id NOT IN (SELECT item_id FROM items)"
    report.items.inserted += _count(con, f"SELECT count(*) {new_items}")
    con.execute(
        f"INSERT INTO items SELECT s.item_id, {', '.join('s.' + c for c in item_cols)} {new_items} ORDER BY s.item_id"
    )

    # Behaviours: distinct within the import (first line kept, for a deterministic insertion order), minus
    # events already stored (NULL-safe match on the full key).
    key = ", ".join(BEHAVIOR_KEY)
    staged = _count(con, "SELECT count(*) FROM _imp_behaviors")
    new = f"SELECT {key}, min(line) AS line FROM _imp_behaviors GROUP BY ALL"
    if _count(con, "SELECT count(*) FROM (SELECT 1 FROM behaviors LIMIT 1)"):
        match = " AND ".join(f"x.{c} IS NOT DISTINCT FROM s.{c}" for c in BEHAVIOR_KEY)
        new = f"SELECT * FROM ({new}) s WHERE NOT EXISTS (SELECT 1 FROM behaviors x WHERE {match})"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _imp_b AS {new}")
    inserted = _count(con, "SELECT count(*) FROM _imp_b")
    con.execute(f"INSERT INTO behaviors SELECT {key} FROM _imp_b ORDER BY line")
    report.behaviors.inserted += inserted
    report.behaviors.duplicates += staged - inserted

    # Users that only appear in behaviours get a row with empty attributes.
    implicit = "FROM (SELECT DISTINCT user_id FROM _imp_b) s WHERE s.user_id NOT IN (SELECT user_id FROM users)"
    report.users_created += _count(con, f"SELECT count(*) {implicit}")
    con.execute(f"INSERT INTO users SELECT s.user_id, '{{}}' {implicit} ORDER BY s.user_id")


def create_missing_items(con: duckdb.DuckDBPyConnection, report: ImportReport) -> None:
    """For sources without item metadata (after `merge_staged`): items only seen in behaviours get a row
    titled by their id, with an empty category path."""
    sql = (
        "FROM (SELECT DISTINCT item_id FROM _imp_b WHERE item_id IS NOT NULL) s "
        "WHERE s.item_id NOT IN (SELECT item_id FROM items)"
    )
    report.items_created += _count(con, f"SELECT count(*) {sql}")
    con.execute(
        f"INSERT INTO items SELECT s.item_id, s.item_id, [], NULL, NULL, NULL, NULL, '{{}}' {sql} ORDER BY s.item_id"
    )


def write_rejects(sources: Sequence[StagedSource], path: Path | None) -> Path | None:
    """Write every source's rejects to one fresh file (or beside each source when path is None)."""
    written: Path | None = None
    fresh: set[Path] = set()
    for src in sources:
        if not len(src.rejects):
            continue
        target = path if path is not None else rejects_path_for(None, src.name if src.name != "<stdin>" else "-")
        if target not in fresh:
            target.unlink(missing_ok=True)  # a rerun replaces, never appends to, old rejects
            fresh.add(target)
        src.rejects.rows.sort(key=lambda r: int(r["line"]))  # parse and row-check rejects, back in file order
        src.rejects.write(target)
        written = target
    return written
