"""The judge label buffer (§3.2 human-in-the-loop): judge samples and every label people (or models) gave them.

Two DuckDB tables: `judge_items` holds each sample once, content-addressed by `sample_hash` (task, user and what the
judge prompt shows, so a relabelled copy or a new sample_id is the same sample), and `judge_labels` is an append-only
log of per-criterion labels. The current label of a (sample, criterion) is its latest row (by ts, then id); "skip"
is a label too, so annotation resumes past what a person chose not to answer. Every write commits on its own
(DuckDB autocommit) unless the caller wraps it in a transaction; imports are all-or-nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson

from recgpt_cli.errors import BadInput
from recgpt_cli.io import iter_jsonl, jsonl_writer, source_name
from recgpt_cli.judge.criteria import TASKS, JudgeTask
from recgpt_cli.judge.samples import expand_record, prompt_variables
from recgpt_cli.store import ensure_tables, open_duckdb_file, transaction

SKIP = "skip"

BUFFER_DDL = """
CREATE SEQUENCE IF NOT EXISTS judge_label_id;
CREATE TABLE IF NOT EXISTS judge_items (
    sample_hash VARCHAR PRIMARY KEY,  -- sample_hash(): task, user_id and the judge prompt's variables
    task VARCHAR NOT NULL,            -- interests | tags | explanations
    sample_id VARCHAR,                -- as first seen; another id for the same content maps to this row
    user_id VARCHAR,
    sample JSON NOT NULL,             -- the flat judge sample, without labels
    added TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS judge_labels (
    id BIGINT PRIMARY KEY DEFAULT nextval('judge_label_id'),
    sample_hash VARCHAR NOT NULL,
    task VARCHAR NOT NULL,
    criterion VARCHAR NOT NULL,
    label VARCHAR NOT NULL,           -- one of the criterion's allowed labels, or 'skip'
    annotator VARCHAR NOT NULL,
    source VARCHAR NOT NULL,          -- human | gold | llm | ...
    ts TIMESTAMP NOT NULL             -- UTC
);
"""

# Fields of the gold/export format that describe a label, not the sample: never stored in `sample`.
_LABEL_FIELDS = ("labels", "source", "annotator", "ts", "sample_hash")


def _task(task: str) -> JudgeTask:
    if task not in TASKS:
        raise ValueError(f"unknown judge task {task!r} (use one of: {', '.join(TASKS)})")
    return TASKS[task]


def sample_hash(sample: dict[str, Any], task: str) -> str:
    """Content address of a judge sample: sha256 over [task, user_id, what the judge prompt shows]. The sample_id,
    labels and notes do not change it."""
    uid = str(sample.get("user_id") or "").strip()
    return hashlib.sha256(orjson.dumps([task, uid, prompt_variables(sample, task)])).hexdigest()


def judge_input_hash(sample: dict[str, Any], task: str) -> str:
    """sha256 over [task, what the judge prompt shows] — no user id: a sample is the same input to a judge under
    any name, so a trained judge records these to refuse being scored on its own training labels."""
    return hashlib.sha256(orjson.dumps([task, prompt_variables(sample, task)])).hexdigest()


def refuse_trained_on(samples: Sequence[dict[str, Any]], task: str, what: str, judge: str, *,
                      sample_hashes: Iterable[str] = (), input_hashes: Iterable[str] = ()) -> None:
    """BadInput when any of `samples` is a training label of `judge` (by its buffer hash or by what the judge sees):
    agreement measured on them would leak."""
    by_sample, by_input = set(sample_hashes), set(input_hashes)
    if not by_sample and not by_input:
        return
    hits = [s.get("sample_id") for s in samples
            if sample_hash(s, task) in by_sample or judge_input_hash(s, task) in by_input]
    if hits:
        raise BadInput(f"{what}: {len(hits)} of its {len(samples)} samples (e.g. {hits[0]}) are training labels "
                       f"of the judge {judge}; scoring it on them would leak",
                       "score it on labels it was not trained on (e.g. `judge train --source` without this set)")


def ensure_buffer(con: duckdb.DuckDBPyConnection) -> None:
    """Create the buffer tables on an open connection if missing (any DuckDB file, the recgpt store included)."""
    ensure_tables(con, BUFFER_DDL)


def open_buffer(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open (or create) a label buffer file."""
    con = open_duckdb_file(Path(path), busy_hint="is another `recgpt judge annotate` using it?", wait=0)
    ensure_buffer(con)
    return con


def _utc(ts: datetime | None) -> datetime:
    """A naive UTC timestamp (the column has no zone); aware times are converted, naive ones taken as UTC."""
    if ts is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


def _insert_items(con: duckdb.DuckDBPyConnection, task: str, samples: Iterable[dict[str, Any]]
                  ) -> tuple[int, list[str]]:
    """Store samples not yet in the buffer; returns (new, the hash of each input sample in order)."""
    hashes: list[str] = []
    rows: dict[str, tuple[str, str, str | None, str | None, str]] = {}
    for s in samples:
        h = sample_hash(s, task)
        hashes.append(h)
        if h not in rows:
            body = {k: v for k, v in s.items() if k not in _LABEL_FIELDS}
            sid = s.get("sample_id")
            rows[h] = (h, task, None if sid is None else str(sid), str(s.get("user_id") or "") or None,
                       orjson.dumps(body).decode())
    if not rows:
        return 0, hashes
    known = {r[0] for r in con.execute(
        "SELECT sample_hash FROM judge_items WHERE list_contains(?, sample_hash)", [list(rows)]).fetchall()}
    new = [r for h, r in rows.items() if h not in known]
    if new:
        con.executemany("INSERT INTO judge_items (sample_hash, task, sample_id, user_id, sample) "
                        "VALUES (?, ?, ?, ?, ?)", new)
    return len(new), hashes


def add_samples(con: duckdb.DuckDBPyConnection, task: str, samples: Iterable[dict[str, Any]]) -> int:
    """Add flat judge samples (samples.expand_record output) to the buffer, labels stripped. Returns how many
    were new; a sample already stored (same sample_hash) is kept as first stored."""
    _task(task)
    with transaction(con):
        return _insert_items(con, task, samples)[0]


def _check_label(spec: JudgeTask, criterion: str, label: str) -> None:
    if criterion not in spec.criteria:
        raise ValueError(f"{spec.name}: unknown criterion {criterion!r} (use one of: {', '.join(spec.criteria)})")
    if label != SKIP and label not in spec.allowed(criterion):
        raise ValueError(f"{spec.name}/{criterion}: {label!r} is not one of "
                         f"{', '.join(spec.allowed(criterion))} (or {SKIP!r})")


def _insert_label(con: duckdb.DuckDBPyConnection, h: str, task: str, criterion: str, label: str,
                  annotator: str, source: str, ts: datetime) -> int:
    row = con.execute("INSERT INTO judge_labels (sample_hash, task, criterion, label, annotator, source, ts) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                      [h, task, criterion, label, annotator, source, ts]).fetchone()
    assert row is not None
    return int(row[0])


def add_label(con: duckdb.DuckDBPyConnection, sample_hash: str, task: str, criterion: str, label: str, *,
              annotator: str, source: str, ts: datetime | None = None) -> int:
    """Store one label for a buffered sample (commits at once). `label` is one of the criterion's allowed labels
    or "skip"; ValueError names what is wrong. Returns the label row's id."""
    spec = _task(task)
    _check_label(spec, criterion, label)
    if not annotator or not source:
        raise ValueError("annotator and source must be non-empty")
    if con.execute("SELECT 1 FROM judge_items WHERE sample_hash = ? AND task = ?",
                   [sample_hash, task]).fetchone() is None:
        raise ValueError(f"no {task} sample with hash {sample_hash[:12]}… in the buffer (add_samples first)")
    return _insert_label(con, sample_hash, task, criterion, label, annotator, source, _utc(ts))


def add_labelled(con: duckdb.DuckDBPyConnection, task: str, rows: Iterable[tuple[dict[str, Any], dict[str, str]]],
                 *, annotator: str, source: str, ts: datetime | None = None) -> dict[str, int]:
    """Bulk: store (sample, {criterion: label}) pairs in one transaction (derived labels come by the thousand).
    A label already current for its sample and source is not stored again. Returns {"samples", "new_samples",
    "labels"}."""
    spec = _task(task)
    pairs = list(rows)
    for _, labels in pairs:
        err = spec.check_labels(labels)
        if err:
            raise ValueError(err)
    stamp = _utc(ts)
    with transaction(con):
        new, hashes = _insert_items(con, task, (s for s, _ in pairs))
        current = current_labels(con, task, sources=[source])
        latest: dict[tuple[str, str], str] = {}  # the same sample twice in one call: its last labels win
        for h, (_, labels) in zip(hashes, pairs, strict=True):
            latest.update({(h, c): lab for c, lab in labels.items()})
        rows_out = [(h, task, c, lab, annotator, source, stamp) for (h, c), lab in latest.items()
                    if current.get(h, {}).get(c) != lab]
        if rows_out:
            con.executemany("INSERT INTO judge_labels (sample_hash, task, criterion, label, annotator, source, ts) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows_out)
    return {"samples": len(pairs), "new_samples": new, "labels": len(rows_out)}


def undo_last(con: duckdb.DuckDBPyConnection, task: str, annotator: str, ids: Sequence[int] | None = None
              ) -> tuple[str, str] | None:
    """Delete the annotator's most recently stored label for `task` — among the label rows `ids` when given (an
    annotation session passes its own, so undo never reaches imported or earlier labels); returns its
    (sample_hash, criterion), or None when there is nothing to undo."""
    if ids is not None and not ids:
        return None
    among = " AND list_contains(?, id)" if ids is not None else ""
    params: list[Any] = [task, annotator] + ([list(ids)] if ids is not None else [])
    row = con.execute("DELETE FROM judge_labels WHERE id = (SELECT max(id) FROM judge_labels WHERE task = ? "
                      f"AND annotator = ?{among}) RETURNING sample_hash, criterion", params).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _latest_sql(sources: Sequence[str] | None) -> tuple[str, list[Any]]:
    """The latest label row per (sample, criterion) of one task (parameter 1: task)."""
    where = "task = ?" + (" AND list_contains(?, source)" if sources is not None else "")
    sql = (f"SELECT * FROM judge_labels WHERE {where} "
           "QUALIFY row_number() OVER (PARTITION BY sample_hash, criterion ORDER BY ts DESC, id DESC) = 1")
    return sql, ([list(sources)] if sources is not None else [])


def current_labels(con: duckdb.DuckDBPyConnection, task: str, *, sources: Sequence[str] | None = None
                   ) -> dict[str, dict[str, str]]:
    """sample_hash -> {criterion: latest label} ("skip" included), from `sources` only when given."""
    _task(task)
    sql, params = _latest_sql(sources)
    out: dict[str, dict[str, str]] = {}
    for h, c, label in con.execute(f"SELECT sample_hash, criterion, label FROM ({sql}) ORDER BY sample_hash, id",
                                   [task, *params]).fetchall():
        out.setdefault(h, {})[c] = label
    return out


def labelled(con: duckdb.DuckDBPyConnection, task: str, *, sources: Sequence[str] | None = None,
             complete_only: bool = True) -> list[dict[str, Any]]:
    """Labelled samples, ordered by ts then hash: {sample_hash, sample_id, user_id, sample, labels, source,
    annotator, ts}, with source/annotator/ts of the sample's latest label. complete_only: only samples whose every
    criterion has a non-skip latest label; otherwise every sample with at least one (skips left out of `labels`)."""
    spec = _task(task)
    sql, params = _latest_sql(sources)
    having = f"count(*) = {len(spec.criteria)}" if complete_only else "count(*) > 0"
    rows = con.execute(f"""
        WITH latest AS ({sql}), answered AS (SELECT * FROM latest WHERE label <> '{SKIP}')
        SELECT a.sample_hash, any_value(i.sample_id), any_value(i.user_id), any_value(i.sample),
               map_from_entries(list({{'k': a.criterion, 'v': a.label}})),
               arg_max(a.source, (a.ts, a.id)), arg_max(a.annotator, (a.ts, a.id)), max(a.ts) AS last_ts
        FROM answered a JOIN judge_items i USING (sample_hash)
        WHERE list_contains(?, a.criterion)
        GROUP BY a.sample_hash HAVING {having}
        ORDER BY last_ts, a.sample_hash""",
                       [task, *params, list(spec.criteria)]).fetchall()
    order = {c: i for i, c in enumerate(spec.criteria)}
    out = []
    for h, sid, uid, sample, labels, source, annotator, ts in rows:
        out.append({"sample_hash": h, "sample_id": sid, "user_id": uid, "sample": orjson.loads(sample),
                    "labels": dict(sorted(labels.items(), key=lambda kv: order[kv[0]])), "source": source,
                    "annotator": annotator, "ts": ts})
    return out


def next_unlabelled(con: duckdb.DuckDBPyConnection, task: str, hashes: Sequence[str], *,
                    sources: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
    """In the given order (first occurrence of each hash), the samples still lacking a latest label for some
    criterion ("skip" counts as answered), each with those criteria in the task's order. `sources` limits which
    labels count (annotation passes its own source so model verdicts do not hide samples from people)."""
    spec = _task(task)
    labels = current_labels(con, task, sources=sources)
    out: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for h in hashes:
        if h in seen:
            continue
        seen.add(h)
        have = labels.get(h, {})
        missing = [c for c in spec.criteria if c not in have]
        if missing:
            out.append((h, missing))
    return out


def _parse_ts(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"'ts' must be an ISO 8601 string, got {type(value).__name__}")
    try:
        return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(f"'ts' {value!r} is not an ISO 8601 date-time") from None


def import_labels(con: duckdb.DuckDBPyConnection, path: str | Path, task: str, *, source: str, annotator: str
                  ) -> dict[str, int]:
    """Load labelled samples in the gold format (sample_data/gold/*.jsonl: sample fields + "labels"; optional
    "source", "annotator", "ts" per row override the defaults). All-or-nothing; a bad line raises BadInput
    `file:line: ...`. A label already stored (same sample, criterion, label, source, annotator and, when the row
    gives one, ts) is not stored again, so importing a file twice changes nothing. Returns {"samples": rows,
    "new_samples", "labels": label rows stored, "already_stored"}."""
    spec = _task(task)
    name = source_name(path)
    hint = f"labels for --task {task}: see sample_data/gold/README.md"
    parsed: list[tuple[dict[str, Any], dict[str, str], str, str, datetime | None]] = []
    for line, rec in iter_jsonl(path):
        try:
            labels = rec.get("labels")
            if not isinstance(labels, dict):
                raise ValueError("missing 'labels' object")
            err = spec.check_labels(labels)
            if err:
                raise ValueError(err)
            src, who = rec.get("source", source), rec.get("annotator", annotator)
            if not (isinstance(src, str) and src and isinstance(who, str) and who):
                raise ValueError("'source' and 'annotator' must be non-empty strings")
            ts = _parse_ts(rec["ts"]) if rec.get("ts") is not None else None
            samples = expand_record(rec, task)
        except ValueError as exc:
            raise BadInput.at(name, line, str(exc), hint) from None
        parsed.append((samples[0], labels, src, who, ts))
    now = _utc(None)
    stored = already = 0
    with transaction(con):
        new_samples, hashes = _insert_items(con, task, [p[0] for p in parsed])
        for h, (_, labels, src, who, ts) in zip(hashes, parsed, strict=True):
            for c in spec.criteria:
                match = ("SELECT 1 FROM judge_labels WHERE sample_hash = ? AND task = ? AND criterion = ? "
                         "AND label = ? AND source = ? AND annotator = ?")
                args: list[Any] = [h, task, c, labels[c], src, who]
                if ts is not None:
                    match += " AND ts = ?"
                    args.append(ts)
                if con.execute(match, args).fetchone() is not None:
                    already += 1
                    continue
                _insert_label(con, h, task, c, labels[c], who, src, ts or now)
                stored += 1
    return {"samples": len(parsed), "new_samples": new_samples, "labels": stored, "already_stored": already}


def export_labels(con: duckdb.DuckDBPyConnection, task: str, out: str, *, sources: Sequence[str] | None = None
                  ) -> int:
    """Write completely labelled samples in the gold format (sample fields + "labels", "source", "annotator",
    "ts" ISO, "sample_hash") to `out` (`-` = stdout); import_labels reads it back. Returns rows written."""
    with jsonl_writer(out) as w:
        for row in labelled(con, task, sources=sources):
            w.write({**row["sample"], "labels": row["labels"], "source": row["source"],
                     "annotator": row["annotator"], "ts": row["ts"].isoformat(), "sample_hash": row["sample_hash"]})
        return w.count


def label_counts(con: duckdb.DuckDBPyConnection, task: str) -> dict[str, Any]:
    """A summary: {"samples": buffered, "complete": fully labelled, "rows": label rows stored, "by_source":
    {source: label rows}, "by_criterion": {criterion: {label: samples whose latest label it is}}}."""
    spec = _task(task)
    n_items = con.execute("SELECT count(*) FROM judge_items WHERE task = ?", [task]).fetchone()
    by_source = dict(con.execute("SELECT source, count(*) FROM judge_labels WHERE task = ? GROUP BY source "
                                 "ORDER BY source", [task]).fetchall())
    sql, params = _latest_sql(None)
    by_criterion: dict[str, dict[str, int]] = {c: {} for c in spec.criteria}
    for c, label, n in con.execute(f"SELECT criterion, label, count(*) FROM ({sql}) GROUP BY ALL ORDER BY ALL",
                                   [task, *params]).fetchall():
        by_criterion.setdefault(c, {})[label] = int(n)
    return {"samples": int(n_items[0]) if n_items else 0, "complete": len(labelled(con, task)),
            "rows": sum(by_source.values()), "by_source": by_source, "by_criterion": by_criterion}
