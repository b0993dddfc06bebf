"""Milestone checks (§3.2): the judge against fresh human labels; below a threshold the judge must be realigned.

Every check is a row of `judge_checks` in the label buffer's DuckDB file, so agreement over time (drift) is one
query: `recgpt judge check` prints the task's recent history under its table.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import duckdb

from recgpt_cli.store import ensure_tables

CHECKS_DDL = """
CREATE TABLE IF NOT EXISTS judge_checks (
    ts TIMESTAMP NOT NULL,          -- UTC
    task VARCHAR NOT NULL,
    judge VARCHAR NOT NULL,         -- what judged: model path / backend, "+ rules" when post-checks ran
    labels VARCHAR NOT NULL,        -- the fresh labels file
    n INTEGER NOT NULL,
    acc DOUBLE, precision DOUBLE, recall DOUBLE, f1 DOUBLE,
    min_f1 DOUBLE,
    passed BOOLEAN NOT NULL,
    report JSON                     -- the whole agreement report (per criterion)
);
"""


def record_check(con: duckdb.DuckDBPyConnection, report: dict[str, Any], *, judge: str, labels: str,
                 min_f1: float | None, ts: datetime | None = None) -> bool:
    """Store one check; returns whether it passed: overall F1 >= min_f1 (always, without a threshold) and every
    label got a verdict — a judge whose answers fail is not agreeing with anyone."""
    import orjson

    ensure_tables(con, CHECKS_DDL)
    m = report["overall"]
    passed = (min_f1 is None or m["f1"] >= min_f1) and not report.get("n_errors") and report["n"] > 0
    stamp = (ts or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)
    con.execute("INSERT INTO judge_checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [stamp, report["task"], judge, labels, report["n"], m["acc"], m["precision"], m["recall"], m["f1"],
                 min_f1, passed, orjson.dumps(report).decode()])
    return passed


def check_history(con: duckdb.DuckDBPyConnection, task: str, limit: int = 10) -> list[dict[str, Any]]:
    """The task's latest checks, newest first."""
    ensure_tables(con, CHECKS_DDL)
    rows = con.execute("SELECT ts, judge, labels, n, acc, f1, min_f1, passed FROM judge_checks WHERE task = ? "
                       "ORDER BY ts DESC LIMIT ?", [task, limit]).fetchall()
    keys = ("ts", "judge", "labels", "n", "acc", "f1", "min_f1", "passed")
    return [dict(zip(keys, r, strict=True)) for r in rows]
