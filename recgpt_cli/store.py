"""The DuckDB store: one file holds users, items, behaviours and every later stage's tables.

Core tables are created here; a stage that needs its own tables declares them with `ensure_tables`
(CREATE TABLE IF NOT EXISTS), so stages never edit this module to add state.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from recgpt_cli.errors import BadInput, RecgptError
from recgpt_cli.io import check_parents

SCHEMA_VERSION = 1
# How long opening a --db waits for another process's lock before giving up (seconds; $RECGPT_DB_WAIT). The
# stages of one pipe start together: `compress --split` may be writing the split while `predict-tags --db` reads
# the catalogue, each for a second or so, and DuckDB has no busy timeout of its own.
DB_WAIT_S = 30.0

CORE_DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS users (
    user_id VARCHAR PRIMARY KEY,
    attributes JSON
);
CREATE TABLE IF NOT EXISTS items (
    item_id VARCHAR PRIMARY KEY,
    title VARCHAR NOT NULL,
    category_path VARCHAR[],          -- root .. leaf
    category_leaf VARCHAR,            -- last element of category_path, for joins
    brand VARCHAR,
    price DOUBLE,
    sales BIGINT,
    extra JSON
);
CREATE TABLE IF NOT EXISTS behaviors (
    user_id VARCHAR NOT NULL,
    item_id VARCHAR,                  -- NULL for searches
    query VARCHAR,                    -- set for searches
    type VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    value DOUBLE                      -- rating value
);
"""


def open_db(path: str | Path, *, read_only: bool = False, create: bool = True) -> duckdb.DuckDBPyConnection:
    """Open (or create) a recgpt DuckDB file and check its schema version."""
    p = Path(path)
    if not p.exists():
        if read_only or not create:
            raise BadInput(f"{p}: no such database", "run `recgpt import ...` first to create it")
    con = open_duckdb_file(p, read_only=read_only)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "meta" in tables:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = int(row[0]) if row else None
        if found != SCHEMA_VERSION:
            con.close()
            raise BadInput(
                f"{p}: database schema version {found}, this recgpt needs {SCHEMA_VERSION}",
                "re-import your data into a new --db file",
            )
    elif tables:
        con.close()
        raise BadInput(f"{p}: a DuckDB file, but not a recgpt database (no meta table)")
    elif read_only:  # an empty DuckDB file: nothing imported, and read-only cannot create the tables
        con.close()
        raise BadInput(f"{p}: an empty DuckDB file, not a recgpt database yet", "run `recgpt import ...` into it first")
    else:
        con.execute(CORE_DDL)
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    return con


def open_duckdb_file(p: Path, *, read_only: bool = False, busy_hint: str | None = None,
                     wait: float | None = None) -> duckdb.DuckDBPyConnection:
    """Connect to DuckDB file `p` (created, with its folders, when missing and not read-only), refusing what is
    not one: a folder, a path under a file, a file of another format. A lock held by another process is waited
    for up to `wait` seconds (default $RECGPT_DB_WAIT or DB_WAIT_S), then RecgptError (exit 1, `busy_hint` says
    who); anything else DuckDB rejects is bad input."""
    if p.is_dir():
        raise BadInput(f"{p}: is a directory, expected a DuckDB file")
    check_duckdb_header(p)
    if not read_only:
        check_parents(p)
        p.parent.mkdir(parents=True, exist_ok=True)
    deadline, pause = time.monotonic() + (_db_wait() if wait is None else wait), 0.05
    while True:
        try:
            con = duckdb.connect(str(p), read_only=read_only)
            break
        except duckdb.IOException as exc:
            first = str(exc).splitlines()[0]
            if "lock" not in first.lower():  # a truncated or damaged file: the input is at fault
                raise BadInput(f"{p}: cannot open database, the file is damaged ({first})") from None
            if time.monotonic() + pause < deadline:
                time.sleep(pause)  # another process holds it: wait a little, then try again
                pause = min(pause * 2, 1.0)
                continue
            raise RecgptError(f"{p}: cannot open database ({first})", busy_hint) from None
        except duckdb.Error as exc:
            raise BadInput(f"{p}: not a DuckDB database ({str(exc).splitlines()[0]})") from None
    check_file_backed(con, p)
    return con


def _db_wait() -> float:
    try:
        return max(0.0, float(os.environ.get("RECGPT_DB_WAIT", DB_WAIT_S)))
    except ValueError:
        raise BadInput(f"RECGPT_DB_WAIT={os.environ['RECGPT_DB_WAIT']!r}: expected seconds, e.g. 30") from None


def check_duckdb_header(p: Path) -> None:
    """An existing file must carry DuckDB's magic bytes ("DUCK" after the 8-byte checksum); otherwise DuckDB
    opens it as something else (a JSONL file as an in-memory database, a SQLite file by downloading an
    extension) or fails with an IO error that reads like a lock."""
    if not p.is_file():
        return
    with p.open("rb") as fh:
        head = fh.read(12)
    if head[8:12] != b"DUCK":
        raise BadInput(f"{p}: not a DuckDB database", "give a .duckdb file (a new name creates one)")


def check_file_backed(con: duckdb.DuckDBPyConnection, p: Path) -> None:
    """DuckDB 2 opens a file it does not recognise as a DuckDB database (a JSONL file, say) as an in-memory
    database over that file, so writes would vanish: refuse it instead."""
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if not row or not row[0]:
        con.close()
        raise BadInput(f"{p}: not a DuckDB database", "give a .duckdb file (a new name creates one)")


@contextlib.contextmanager
def connect(path: str | Path, *, read_only: bool = False, create: bool = True
            ) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open a recgpt database; `create=False` for stages that need data already imported (a mistyped --db is
    reported as missing instead of becoming a new empty file)."""
    con = open_db(path, read_only=read_only, create=create)
    try:
        yield con
    finally:
        con.close()


def ensure_tables(con: duckdb.DuckDBPyConnection, ddl: str) -> None:
    """Create a stage's own tables if missing (DDL must use CREATE TABLE IF NOT EXISTS)."""
    con.execute(ddl)


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: a failed import leaves the database as it was."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    else:
        con.execute("COMMIT")


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of the core tables."""
    return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in ("users", "items", "behaviors")}


def known_user_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every user the store knows: a `users` row or a behaviour (imports may bring behaviours alone)."""
    rows = con.execute("SELECT user_id FROM users UNION SELECT DISTINCT user_id FROM behaviors").fetchall()
    return {str(r[0]) for r in rows}
