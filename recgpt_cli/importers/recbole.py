"""`recgpt import recbole DIR`: RecBole atomic files (`X.inter`, `X.item`, `X.user`), read in bulk by DuckDB.

Headers are `name:type` (token, token_seq, float, float_seq), tab-separated. The mapping, chosen to keep every
field and stay readable for the LLM stages:

- `.inter` row -> one behaviour: rating >= `rating_threshold` -> favorite, else detail_view, with `value` = the
  rating (so nothing is lost); without a rating field every row is a detail_view. `timestamp` (epoch seconds) is
  required.
- `.item` -> title from the first of movie_title/title/name/... (else the id). Flat labels (`class`, `genre`,
  `genres`) give category path [root, first label] (root "Movies" for movie datasets) with all labels in
  `extra.genres`; a hierarchical `categories`/`category` token_seq is the path itself. `brand`, `price`, `sales`
  map to columns; every other field goes to `extra` (token_seq/float_seq as lists).
- `.user` -> attributes: every non-id field (`zip_code` becomes `location`, numeric `age` an integer).
- No `.user` / `.item` file: users / items are created from the interactions (items titled by their id).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from recgpt_cli.errors import BadInput
from recgpt_cli.importers.staging import (
    ImportReport,
    StagedSource,
    Timer,
    check_dangling_items,
    check_ids,
    check_rating_threshold,
    check_required,
    create_missing_items,
    create_staging,
    data_line_locator,
    drop_staging,
    epoch_seconds_sql,
    merge_staged,
    ordinal,
    read_delimited,
    sql_str,
    write_rejects,
)
from recgpt_cli.store import transaction

FIELD_TYPES = {"token": "VARCHAR", "token_seq": "VARCHAR", "float": "DOUBLE", "float_seq": "VARCHAR"}
TITLE_FIELDS = ("movie_title", "title", "name", "item_name", "book_title", "product_name", "app_name")
LABEL_FIELDS = ("class", "genre", "genres")  # flat labels: first one is the leaf
PATH_FIELDS = ("categories", "category")  # hierarchical, root .. leaf
MOVIE_TITLE = "movie_title"


def q(name: str) -> str:
    """Quote a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def read_header(path: Path) -> dict[str, str]:
    """Field name -> RecBole type from the `name:type` header line."""
    with path.open("rb") as fh:
        first = fh.readline().decode("utf-8", "replace").rstrip("\r\n")
    fields: dict[str, str] = {}
    for part in first.split("\t"):
        name, _, ftype = part.partition(":")
        if not name or ftype not in FIELD_TYPES:
            raise BadInput.at(
                str(path), 1, f"bad header field {part!r}; expected name:type with type one of {', '.join(FIELD_TYPES)}"
            )
        if name in fields:
            raise BadInput.at(str(path), 1, f"field {name!r} appears twice in the header")
        fields[name] = ftype
    return fields


def find_atomic(directory: Path, suffix: str) -> Path | None:
    found = sorted(directory.glob(f"*.{suffix}"))
    if len(found) > 1:
        raise BadInput(
            f"{directory}: several .{suffix} files ({', '.join(p.name for p in found)})", "keep one dataset per folder"
        )
    return found[0] if found else None


def json_value(name: str, ftype: str) -> str:
    """SQL turning a raw field into a JSON-ready value: *_seq fields become lists (space-separated)."""
    col = q(name)
    if ftype == "token_seq":
        return f"CASE WHEN {col} IS NULL THEN NULL ELSE list_filter(string_split({col}, ' '), lambda x: x <> '') END"
    if ftype == "float_seq":
        return (
            f"list_transform(list_filter(string_split({col}, ' '), lambda x: x <> ''), lambda x: TRY_CAST(x AS DOUBLE))"
        )
    return col


def json_object_sql(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "'{}'::JSON"
    return "json_object(" + ", ".join(f"{sql_str(k)}, {v}" for k, v in pairs) + ")"


def _load(
    con: duckdb.DuckDBPyConnection, table: str, path: Path, fields: dict[str, str], source: StagedSource, skip_bad: bool
) -> None:
    read_delimited(
        con,
        table,
        path,
        {k: FIELD_TYPES[t] for k, t in fields.items()},
        delim="\t",
        skip=1,
        skip_bad=skip_bad,
        rejects=source.rejects,
    )
    source.locate = data_line_locator(path, skip=1, rejects=source.rejects)


def _header_with(path: Path, *required: str) -> dict[str, str]:
    fields = read_header(path)
    for name in required:
        if name not in fields:
            raise BadInput.at(str(path), 1, f"no {name!r} field in header")
    return fields


def _stage_users(
    con: duckdb.DuckDBPyConnection, path: Path, user_field: str, report: ImportReport, skip_bad: bool
) -> StagedSource:
    fields = _header_with(path, user_field)
    source = StagedSource(str(path))
    _load(con, "_rb_user", path, fields, source, skip_bad)
    pairs = []
    for name, ftype in fields.items():
        if name == user_field:
            continue
        value = json_value(name, ftype)
        if name == "age" and ftype == "token":
            value = f"coalesce(to_json(TRY_CAST({q(name)} AS INTEGER)), to_json({q(name)}))"
        pairs.append(("location" if name == "zip_code" else name, value))
    con.execute(
        f"INSERT INTO _imp_users SELECT {q(user_field)}, {json_object_sql(pairs)}, {ordinal('_rb_user')} FROM _rb_user"
    )
    check_ids(con, "users", source, report, skip_bad=skip_bad)
    return source


def _stage_items(
    con: duckdb.DuckDBPyConnection, path: Path, item_field: str, report: ImportReport, skip_bad: bool
) -> StagedSource:
    fields = _header_with(path, item_field)
    source = StagedSource(str(path))
    _load(con, "_rb_item", path, fields, source, skip_bad)
    title_f = next((f for f in TITLE_FIELDS if f in fields), None)
    label_f = next((f for f in LABEL_FIELDS if f in fields), None)
    path_f = next((f for f in PATH_FIELDS if f in fields), None) if label_f is None else None
    used = {item_field, title_f, label_f, path_f, "brand", "price", "sales"}
    title = f"coalesce(nullif(trim({q(title_f)}), ''), {q(item_field)})" if title_f else q(item_field)
    if label_f:
        labels = json_value(label_f, "token_seq")
        root = "['Movies']" if title_f == MOVIE_TITLE else "[]"
        category = f"list_concat({root}, coalesce({labels}, [])[1:1])"
    elif path_f:
        category = f"coalesce({json_value(path_f, 'token_seq')}, [])"
    else:
        category = "[]::VARCHAR[]"
    extra = [(name, json_value(name, t)) for name, t in fields.items() if name not in used]
    if label_f:
        extra.insert(0, ("genres", f"coalesce({json_value(label_f, 'token_seq')}, [])"))
    brand = q("brand") if "brand" in fields else "NULL"
    price = f"TRY_CAST({q('price')} AS DOUBLE)" if "price" in fields else "NULL"
    sales = f"TRY_CAST({q('sales')} AS BIGINT)" if "sales" in fields else "NULL"
    con.execute(
        f"INSERT INTO _imp_items SELECT {q(item_field)}, {title}, {category}, {brand}, {price}, {sales}, "
        f"{json_object_sql(extra)}, {ordinal('_rb_item')} FROM _rb_item"
    )
    check_ids(con, "items", source, report, skip_bad=skip_bad)
    return source


def _stage_behaviors(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    user_field: str,
    item_field: str,
    rating_threshold: float,
    report: ImportReport,
    skip_bad: bool,
) -> StagedSource:
    fields = _header_with(path, user_field, item_field)
    if "timestamp" not in fields:
        raise BadInput.at(str(path), 1, "no timestamp field; recgpt needs timestamp:float (epoch seconds)")
    ignored = sorted(set(fields) - {user_field, item_field, "rating", "timestamp"})
    if ignored:
        report.notes.append(f"{path.name}: fields not kept (behaviours have no extra column): {', '.join(ignored)}")
    source = StagedSource(str(path))
    _load(con, "_rb_inter", path, fields, source, skip_bad)
    if "rating" in fields:
        value = "TRY_CAST(rating AS DOUBLE)"
        kind = f"CASE WHEN {value} >= {float(rating_threshold)} THEN 'favorite' ELSE 'detail_view' END"
    else:
        report.notes.append(f"{path.name}: no rating field, every interaction imported as detail_view")
        kind, value = "'detail_view'", "NULL"
    ts = epoch_seconds_sql("timestamp")
    con.execute(
        f"INSERT INTO _imp_behaviors SELECT {q(user_field)}, {q(item_field)}, NULL, {kind}, {ts}, {value}, "
        f"{ordinal('_rb_inter')} FROM _rb_inter"
    )
    check_required(con, source, report, skip_bad)
    return source


def import_recbole(
    con: duckdb.DuckDBPyConnection,
    directory: str | Path,
    *,
    rating_threshold: float = 4.0,
    user_field: str = "user_id",
    item_field: str = "item_id",
    skip_bad: bool = False,
    rejects_path: Path | None = None,
) -> ImportReport:
    """Import a RecBole atomic-file dataset folder (`.inter` required, `.item`/`.user` optional), all or nothing.

    Same upsert/dedup rules as `import_jsonl`; see the module docstring for the field mapping."""
    check_rating_threshold(rating_threshold)
    timer = Timer()
    d = Path(directory)
    if not d.is_dir():
        raise BadInput(f"{d}: {'is a file, not a folder' if d.exists() else 'no such folder'}",
                       "give the folder holding X.inter / X.item / X.user")
    inter = find_atomic(d, "inter")
    if inter is None:
        raise BadInput(f"{d}: no .inter file", "RecBole datasets need X.inter (user_id:token item_id:token ...)")
    item, user = find_atomic(d, "item"), find_atomic(d, "user")
    report = ImportReport(source=str(d))
    sources: list[StagedSource] = []
    with transaction(con):
        create_staging(con)
        if user is not None:
            sources.append(_stage_users(con, user, user_field, report, skip_bad))
        if item is not None:
            sources.append(_stage_items(con, item, item_field, report, skip_bad))
        behaviors = _stage_behaviors(con, inter, user_field, item_field, rating_threshold, report, skip_bad)
        sources.append(behaviors)
        if item is not None:
            check_dangling_items(con, behaviors, report, skip_bad=skip_bad)
        merge_staged(con, report)
        if item is None:
            create_missing_items(con, report)
        for t in ("_rb_user", "_rb_item", "_rb_inter"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        drop_staging(con)
    # Every reject (parse errors and row checks) is in its source's list; count them per table.
    for table, path in (("users", user), ("items", item), ("behaviors", inter)):
        getattr(report, table).rejected = next((len(s.rejects) for s in sources if s.name == str(path)), 0)
    report.rejects_path = write_rejects(sources, rejects_path)
    report.seconds = timer.seconds()
    return report
