"""Alignment samples: one chat sample = the rendered prompt a stage serves (`messages`) + the reply to learn
(`target`). Content-addressed (`Sample.hash` over task, messages and target), stored in DuckDB (`align_samples`:
hash, task, source, round, user_id, category, messages, target, meta) and exportable as JSONL.

Kept apart from the builders so training needs only orjson (a GPU box without DuckDB trains from a JSONL export).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from recgpt_cli.errors import BadInput

if TYPE_CHECKING:
    import duckdb

# `--task` names -> the stage prompt's task (front matter `task:`)
TASKS = {"interests": "interest_mining", "tags": "tag_prediction", "explanations": "explanation"}
# `--task judge` -> the judge prompts' tasks (samples built from the judge label buffer, recgpt_cli/judge/training.py)
JUDGE_TASKS = ("judge_interests", "judge_tags", "judge_explanations")

SAMPLES_DDL = """
CREATE TABLE IF NOT EXISTS align_samples (
    hash VARCHAR PRIMARY KEY,
    task VARCHAR NOT NULL,       -- prompt task: interest_mining, tag_prediction, ...
    source VARCHAR NOT NULL,     -- logs | teacher | self-train
    round INTEGER NOT NULL,      -- self-training round (0: built from data)
    user_id VARCHAR,
    category VARCHAR,            -- what balancing counted the sample under
    messages JSON NOT NULL,      -- the rendered prompt, as the stage serves it
    target VARCHAR NOT NULL,     -- the assistant reply (JSON in the schema's key order)
    meta JSON,
    created TIMESTAMP DEFAULT current_timestamp
);
"""


# One row per (teacher run or self-training round, task): how many answers the rules (and judge) passed, so the
# pass rate of each source is kept next to the samples it produced (§2.1.2 stages 2-3).
PASS_RATES_DDL = """
CREATE TABLE IF NOT EXISTS align_pass_rates (
    created TIMESTAMP DEFAULT current_timestamp,
    source VARCHAR NOT NULL,     -- teacher | self-train
    round INTEGER NOT NULL,
    task VARCHAR NOT NULL,       -- interests | tags | explanations
    model VARCHAR,               -- the model that answered
    inputs INTEGER NOT NULL,
    answers INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    removed JSON,                -- rule (or "judge") -> items it removed
    items INTEGER,               -- tags written, each answer judged alone (tags task)
    kept_items INTEGER           -- of those, kept by the rules
);
-- stores made before items / kept_items were recorded
ALTER TABLE align_pass_rates ADD COLUMN IF NOT EXISTS items INTEGER;
ALTER TABLE align_pass_rates ADD COLUMN IF NOT EXISTS kept_items INTEGER;
"""


@dataclass(frozen=True)
class Sample:
    """One chat sample: `messages` (system + user, rendered by the stage's prompt file) and the reply `target`."""

    task: str
    source: str
    messages: list[dict[str, str]]
    target: str
    round: int = 0
    user_id: str | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return hashlib.sha256(orjson.dumps([self.task, self.messages, self.target])).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "task": self.task, "source": self.source, "round": self.round,
                "user_id": self.user_id, "category": self.category, "messages": self.messages,
                "target": self.target, "meta": self.meta}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Sample:
        messages = row["messages"]
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and {"role", "content"} <= set(m) and isinstance(m["role"], str)
                and isinstance(m["content"], str) for m in messages)):
            raise ValueError("`messages` must be a non-empty list of {role, content} strings")
        if not isinstance(row["target"], str) or not isinstance(row["task"], str):
            raise ValueError("`task` and `target` must be strings")
        return cls(row["task"], row.get("source", "logs"), messages, row["target"], int(row.get("round", 0)),
                   row.get("user_id"), row.get("category"), row.get("meta") or {})


def reply_json(value: Any) -> str:
    """The reply as llama.cpp's grammar lets the model write it: keys in schema order, `", "` separators."""
    return orjson.dumps(value).decode().replace('","', '", "').replace('":', '": ').replace(',"', ', "')


def open_samples(path: str | Path) -> duckdb.DuckDBPyConnection:
    from recgpt_cli.errors import BadInput
    from recgpt_cli.store import ensure_tables, open_duckdb_file

    p = Path(path)
    if p.suffix in (".jsonl", ".json"):
        raise BadInput(f"--samples {p}: the sample store is a DuckDB file (a .jsonl is read-only export)",
                       "store into a .duckdb file; add --jsonl FILE for a JSONL copy")
    con = open_duckdb_file(p)
    ensure_tables(con, SAMPLES_DDL)
    return con


def record_pass_rate(con: duckdb.DuckDBPyConnection, *, source: str, task: str, model: str | None, stats: Any
                     ) -> None:
    """Keep one run's pass counts (`self_train.RoundStats`) in the sample store."""
    from recgpt_cli.store import ensure_tables

    ensure_tables(con, PASS_RATES_DDL)
    row = [source, stats.round, task, model, stats.inputs, stats.answers, stats.passed, stats.samples,
           orjson.dumps(stats.removed).decode(), getattr(stats, "items", None), getattr(stats, "kept_items", None)]
    con.execute("INSERT INTO align_pass_rates (source, round, task, model, inputs, answers, passed, samples, removed, "
                "items, kept_items) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)


def unique_samples(samples: Sequence[Sample]) -> tuple[list[Sample], int]:
    """The samples with repeats (same hash) kept once, in order, and how many repeats were dropped."""
    by_hash: dict[str, Sample] = {}
    for sample in samples:
        by_hash.setdefault(sample.hash, sample)
    return list(by_hash.values()), len(samples) - len(by_hash)


def save_samples(con: duckdb.DuckDBPyConnection, samples: Iterable[Sample]) -> tuple[int, int]:
    """Insert samples; one already stored (same hash) is kept once. Returns (new, already stored)."""
    rows = [(s.hash, s.task, s.source, s.round, s.user_id, s.category, orjson.dumps(s.messages).decode(), s.target,
             orjson.dumps(s.meta).decode()) for s in samples]
    count = "SELECT count(*) FROM align_samples"
    before = con.execute(count).fetchone()[0]  # type: ignore[index]
    if rows:
        con.executemany("INSERT INTO align_samples (hash, task, source, round, user_id, category, messages, target, "
                        "meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)
    after = con.execute(count).fetchone()[0]  # type: ignore[index]
    return after - before, len(rows) - (after - before)


def load_samples(path: str | Path, *, tasks: Sequence[str] | None = None, sources: Sequence[str] | None = None
                 ) -> list[Sample]:
    """Samples from a DuckDB store (`align_samples`) or a JSONL export (`.jsonl`), in a stable order (task, round,
    hash); `tasks` takes `--task` names or prompt task names."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such sample file", "build one with `recgpt align data`")
    out: list[Sample] = []
    if p.suffix in (".jsonl", ".json"):
        for n, line in enumerate(p.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(Sample.from_json(orjson.loads(line)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise BadInput.at(str(p), n, f"not an alignment sample ({type(exc).__name__}: {exc})") from None
    else:
        import duckdb

        try:
            con = duckdb.connect(str(p), read_only=True)
        except duckdb.Error as exc:
            raise BadInput(f"{p}: not a DuckDB file or .jsonl export ({str(exc).splitlines()[0]})") from None
        try:
            rows = con.execute("SELECT task, source, messages, target, round, user_id, category, meta "
                               "FROM align_samples").fetchall()
        except duckdb.CatalogException:
            raise BadInput(f"{p}: holds no align_samples table", "build one with `recgpt align data`") from None
        finally:
            con.close()
        out = [Sample(t, s, orjson.loads(m), tg, r, u, c, orjson.loads(me) if me else {})
               for t, s, m, tg, r, u, c, me in rows]
    if tasks:
        wanted = {name for t in tasks for name in (JUDGE_TASKS if t == "judge" else (TASKS.get(t, t),))}
        out = [s for s in out if s.task in wanted]
    if sources:
        out = [s for s in out if s.source in sources]
    return sorted(out, key=lambda s: (s.task, s.round, s.hash))
