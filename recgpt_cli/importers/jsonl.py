"""`recgpt import jsonl`: users/items/behaviours JSONL (schema.User/Item/Behavior), validated line by line.

Each line is validated with pydantic while streaming (errors are `file:line: field: message`); validated rows are
written to a temporary JSONL file that DuckDB bulk-reads into staging tables, so the database never sees
row-by-row inserts.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
from pydantic import ValidationError

from recgpt_cli.errors import BadInput
from recgpt_cli.importers.staging import (
    ImportReport,
    StagedSource,
    TableCounts,
    Timer,
    check_dangling_items,
    check_ids,
    create_staging,
    drop_staging,
    merge_staged,
    sql_str,
    write_rejects,
)
from recgpt_cli.io import STDIO, iter_jsonl, scratch_dir, source_name
from recgpt_cli.schema import Behavior, Item, User, describe_validation_error
from recgpt_cli.store import transaction

_EPOCH = datetime(1970, 1, 1)
MIN_OBJECT_BYTES = 16 * 1024 * 1024  # DuckDB's default maximum_object_size; raised to the longest staged row


def _user_row(obj: dict[str, Any]) -> dict[str, Any]:
    u = User.model_validate(obj)
    return {"user_id": u.user_id, "attributes": u.attributes}


def _item_row(obj: dict[str, Any]) -> dict[str, Any]:
    i = Item.model_validate(obj)
    return {
        "item_id": i.item_id,
        "title": i.title,
        "category_path": i.category,
        "brand": i.brand,
        "price": i.price,
        "sales": i.sales,
        "extra": i.extra,
    }


def _behavior_row(obj: dict[str, Any]) -> dict[str, Any]:
    b = Behavior.model_validate(obj)
    return {
        "user_id": b.user_id,
        "item_id": b.item_id,
        "query": b.query,
        "type": b.type.value,
        # Integer microseconds since the epoch: exact, and cheaper for DuckDB than parsing ISO strings.
        "ts": (b.timestamp - _EPOCH) // _MICROSECOND,
        "value": b.value,
    }


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1) - _EPOCH

# table -> (row builder, read_json columns, SELECT list from the temp file into the staging table)
_TABLES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], dict[str, str], str]] = {
    "users": (_user_row, {"user_id": "VARCHAR", "attributes": "JSON", "line": "BIGINT"}, "user_id, attributes, line"),
    "items": (
        _item_row,
        {
            "item_id": "VARCHAR",
            "title": "VARCHAR",
            "category_path": "VARCHAR[]",
            "brand": "VARCHAR",
            "price": "DOUBLE",
            "sales": "BIGINT",
            "extra": "JSON",
            "line": "BIGINT",
        },
        "item_id, title, category_path, brand, price, sales, extra, line",
    ),
    "behaviors": (
        _behavior_row,
        {
            "user_id": "VARCHAR",
            "item_id": "VARCHAR",
            "query": "VARCHAR",
            "type": "VARCHAR",
            "ts": "BIGINT",
            "value": "DOUBLE",
            "line": "BIGINT",
        },
        "user_id, item_id, query, type, make_timestamp(ts), value, line",
    ),
}


# Id fields per table. JSON strings, or integers read as their digits (the schema's rule, which the fixtures
# rely on); any other JSON type is bad input here, before the schema could turn it into some other text.
_ID_FIELDS = {"users": ("user_id",), "items": ("item_id",), "behaviors": ("user_id", "item_id")}
_ID_HINT = "write ids as JSON strings (integers are read as their digits)"


def _id_type_error(table: str, obj: dict[str, Any]) -> str | None:
    for key in _ID_FIELDS[table]:
        value = obj.get(key)
        if value is not None and not isinstance(value, str) and type(value) is not int:  # bool is not an id
            return f"{key} must be a string, got {type(value).__name__}"
    return None  # a missing or null id is the schema's to report


def _lines(path: str | Path, source: StagedSource, skip_bad: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """`iter_jsonl` over the input; for stdin, over its copy at `source.path`, errors still naming `<stdin>`."""
    if str(path) != STDIO:
        yield from iter_jsonl(path, skip_bad=skip_bad, rejects=source.rejects, allow_empty=True)
        return
    copy = str(source.path)
    try:
        yield from iter_jsonl(copy, skip_bad=skip_bad, rejects=source.rejects, allow_empty=True)
    except BadInput as exc:
        raise BadInput(exc.message.replace(copy, source.name, 1), exc.hint) from None


def _validate_to_file(
    table: str, path: str | Path, out: Path, *, source: StagedSource, skip_bad: bool, counts: TableCounts
) -> int:
    """Stream `path`, validate each line into a staging row, write rows to `out`. Returns the longest row
    written, in bytes (DuckDB's JSON reader needs it: it refuses objects over 16 MB by default)."""
    build = _TABLES[table][0]
    rejects = source.rejects
    n_ok = 0
    longest = 0
    invalid: list[tuple[int, str]] = []  # their raw text is read back in one scan at the end
    with out.open("wb") as fh:
        for lineno, obj in _lines(path, source, skip_bad):
            msg = _id_type_error(table, obj)
            hint = _ID_HINT if msg else None
            if msg is None:
                try:
                    row = build(obj)
                except ValidationError as exc:
                    msg = describe_validation_error(exc)
            if msg is not None:
                if not skip_bad:
                    raise BadInput.at(source.name, lineno, msg, hint)
                invalid.append((lineno, msg))
                continue
            row["line"] = lineno
            data = orjson.dumps(row)
            fh.write(data)
            fh.write(b"\n")
            n_ok += 1
            longest = max(longest, len(data))
    for (lineno, msg), raw in zip(invalid, source.raw_lines([n for n, _ in invalid]), strict=True):
        rejects.add(lineno, msg, raw)
    counts.rejected += len(rejects)
    if n_ok == 0 and len(rejects) == 0:
        raise BadInput.at(source.name, 1, "file is empty, expected one JSON object per line")
    return longest


def import_jsonl(
    con: duckdb.DuckDBPyConnection,
    *,
    users: str | Path | None = None,
    items: str | Path | None = None,
    behaviors: str | Path | None = None,
    skip_bad: bool = False,
    rejects_path: Path | None = None,
) -> ImportReport:
    """Import users/items/behaviours JSONL files (`-` = stdin, at most one) into the store, all or nothing.

    Users and items are upserted by id (a changed record replaces the stored one); within the import, an id
    repeated with different content is bad input, an exact repeat a duplicate. Behaviours already stored
    (same user, item, query, type, timestamp, value) are skipped, so re-importing a file adds nothing.
    A behaviour naming an item in neither the DB nor this import is bad input; one naming an unknown user
    creates that user with empty attributes (counted in `users_created`). Under `skip_bad`, bad lines are
    counted and written to `rejects_path` (default: `<input>.rejects.jsonl` beside each input)."""
    timer = Timer()
    given = {t: p for t, p in (("users", users), ("items", items), ("behaviors", behaviors)) if p is not None}
    if not given:
        raise BadInput("nothing to import", "give --users, --items and/or --behaviors")
    if sum(str(p) == STDIO for p in given.values()) > 1:
        raise BadInput("only one of --users/--items/--behaviors can be - (stdin)")
    report = ImportReport(source=", ".join(f"{t}={source_name(p)}" for t, p in given.items()))
    sources = {t: StagedSource(source_name(p)) for t, p in given.items()}
    with scratch_dir("recgpt-import-") as tmp:
        files = {}
        longest: dict[str, int] = {}
        for table, path in given.items():
            if str(path) == STDIO:  # stdin reads once: keep a copy to take rejected lines from
                sources[table].path = copy = tmp / "stdin.jsonl"
                with copy.open("wb") as fh:
                    shutil.copyfileobj(sys.stdin.buffer, fh)
            files[table] = tmp / f"{table}.jsonl"
            longest[table] = _validate_to_file(
                table, path, files[table], source=sources[table], skip_bad=skip_bad, counts=getattr(report, table)
            )
        with transaction(con):
            create_staging(con)
            for table, file in files.items():
                _, columns, select = _TABLES[table]
                spec = ", ".join(f"{sql_str(k)}: {sql_str(v)}" for k, v in columns.items())
                try:
                    con.execute(
                        f"INSERT INTO _imp_{table} SELECT {select} FROM read_json({sql_str(file)}, "
                        f"format='newline_delimited', columns={{{spec}}}, "
                        f"maximum_object_size={max(MIN_OBJECT_BYTES, longest[table] + 1024)})"
                    )
                except duckdb.InterruptException:
                    raise
                except duckdb.Error as exc:  # e.g. a sales count beyond 64-bit: valid JSON, not storable
                    # The staged copy's path means nothing to the user: name their file instead.
                    msg = str(exc).splitlines()[0].replace(str(file), sources[table].name)
                    raise BadInput(f"{sources[table].name}: a value does not fit the {table} table ({msg})") from None
            for table in ("users", "items"):
                if table in given:
                    check_ids(con, table, sources[table], report, skip_bad=skip_bad)
            if "behaviors" in given:
                check_dangling_items(con, sources["behaviors"], report, skip_bad=skip_bad)
            merge_staged(con, report)
            drop_staging(con)
    report.rejects_path = write_rejects(list(sources.values()), rejects_path)
    report.seconds = timer.seconds()
    return report
