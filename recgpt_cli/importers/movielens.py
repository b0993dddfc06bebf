"""`recgpt import movielens PATH`: raw GroupLens MovieLens folders, read in bulk by DuckDB.

- ml-100k: `u.data` (tab: user, item, rating, epoch), `u.item` (`|`, latin-1, 19 genre flags), `u.user` (`|`).
- ml-1m: `ratings.dat`, `movies.dat` (latin-1, genres `A|B`), `users.dat` (age and occupation codes), `::`.

Ratings become behaviours: rating >= `rating_threshold` -> favorite, else detail_view, with `value` = the rating.
Items: title as given ("Toy Story (1995)"), category ["Movies", first genre], `extra` = {genres, year, ...}.
Users: attributes {age, gender, occupation, location (zip code)}; ml-1m also `age_group` (its age is a bucket code).
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
    create_staging,
    data_line_locator,
    drop_staging,
    epoch_seconds_sql,
    merge_staged,
    ordinal,
    read_delimited,
    write_rejects,
)
from recgpt_cli.store import transaction

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_AGES = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
YEAR_SQL = r"TRY_CAST(nullif(regexp_extract(title, '\((\d{4})\)\s*$', 1), '') AS INTEGER)"
RATING_COLUMNS = {"user_id": "VARCHAR", "item_id": "VARCHAR", "rating": "DOUBLE", "timestamp": "BIGINT"}


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _layout(path: Path) -> tuple[str, Path, Path | None, Path | None]:
    """(variant, ratings, items, users) for a MovieLens folder."""
    if not path.is_dir():
        raise BadInput(f"{path}: {'is a file, not a folder' if path.exists() else 'no such folder'}",
                       "give the unzipped ml-100k or ml-1m folder")
    if (path / "u.data").exists():
        return "ml-100k", path / "u.data", path / "u.item", path / "u.user"
    if (path / "ratings.dat").exists():
        return "ml-1m", path / "ratings.dat", path / "movies.dat", path / "users.dat"
    raise BadInput(
        f"{path}: not a MovieLens folder",
        "expected u.data/u.item/u.user (ml-100k) or ratings.dat/movies.dat/users.dat (ml-1m)",
    )


def _read(
    con: duckdb.DuckDBPyConnection,
    table: str,
    path: Path,
    columns: dict[str, str],
    delim: str,
    source: StagedSource,
    skip_bad: bool,
    encoding: str = "utf-8",
) -> None:
    read_delimited(con, table, path, columns, delim=delim, encoding=encoding, skip_bad=skip_bad, rejects=source.rejects)
    source.locate = data_line_locator(path, skip=0, rejects=source.rejects)
    source.encoding = encoding


def _stage_ml100k(
    con: duckdb.DuckDBPyConnection, items: Path, users: Path | None, sources: dict[str, StagedSource], skip_bad: bool
) -> None:
    flags = {f"g{i}": "INTEGER" for i in range(len(ML100K_GENRES))}
    cols = {
        "item_id": "VARCHAR",
        "title": "VARCHAR",
        "release_date": "VARCHAR",
        "video_release_date": "VARCHAR",
        "imdb_url": "VARCHAR",
        **flags,
    }
    _read(con, "_ml_item", items, cols, "|", sources["items"], skip_bad, encoding="latin-1")
    genres = (
        "list_filter(["
        + ", ".join(
            f"CASE WHEN g{i} = 1 THEN '{g.replace(chr(39), chr(39) * 2)}' END" for i, g in enumerate(ML100K_GENRES)
        )
        + "], lambda x: x IS NOT NULL)"
    )
    con.execute(
        f"INSERT INTO _imp_items SELECT item_id, coalesce(nullif(trim(title), ''), item_id), "
        f"list_concat(['Movies'], g[1:1]), NULL, NULL, NULL, json_object('genres', g, 'year', {YEAR_SQL}, "
        f"'release_date', nullif(release_date, ''), 'imdb_url', nullif(imdb_url, '')), line "
        f"FROM (SELECT *, {genres} AS g, {ordinal('_ml_item')} AS line FROM _ml_item)"
    )
    if users is not None:
        ucols = {
            "user_id": "VARCHAR",
            "age": "INTEGER",
            "gender": "VARCHAR",
            "occupation": "VARCHAR",
            "zip_code": "VARCHAR",
        }
        _read(con, "_ml_user", users, ucols, "|", sources["users"], skip_bad)
        con.execute(
            "INSERT INTO _imp_users SELECT user_id, json_object('age', age, 'gender', gender, "
            f"'occupation', occupation, 'location', zip_code), {ordinal('_ml_user')} FROM _ml_user"
        )


def _stage_ml1m(
    con: duckdb.DuckDBPyConnection, items: Path, users: Path | None, sources: dict[str, StagedSource], skip_bad: bool
) -> None:
    cols = {"item_id": "VARCHAR", "title": "VARCHAR", "genres": "VARCHAR"}
    _read(con, "_ml_item", items, cols, "::", sources["items"], skip_bad, encoding="latin-1")
    con.execute(
        f"INSERT INTO _imp_items SELECT item_id, coalesce(nullif(trim(title), ''), item_id), "
        f"list_concat(['Movies'], g[1:1]), NULL, NULL, NULL, json_object('genres', g, 'year', {YEAR_SQL}), line "
        f"FROM (SELECT *, list_filter(string_split(coalesce(genres, ''), '|'), lambda x: x <> '') AS g, "
        f"{ordinal('_ml_item')} AS line "
        f"FROM _ml_item)"
    )
    if users is not None:
        ucols = {
            "user_id": "VARCHAR",
            "gender": "VARCHAR",
            "age": "INTEGER",
            "occupation": "INTEGER",
            "zip_code": "VARCHAR",
        }
        _read(con, "_ml_user", users, ucols, "::", sources["users"], skip_bad)
        ages = "MAP {" + ", ".join(f"{k}: '{v}'" for k, v in ML1M_AGES.items()) + "}"
        con.execute(
            f"INSERT INTO _imp_users SELECT user_id, json_object('age', age, 'age_group', {ages}[age], "
            f"'gender', gender, 'occupation', {_sql_list(ML1M_OCCUPATIONS)}[occupation + 1], "
            f"'location', zip_code), {ordinal('_ml_user')} FROM _ml_user"
        )


def import_movielens(
    con: duckdb.DuckDBPyConnection,
    path: str | Path,
    *,
    rating_threshold: float = 4.0,
    skip_bad: bool = False,
    rejects_path: Path | None = None,
) -> ImportReport:
    """Import a raw MovieLens ml-100k or ml-1m folder, all or nothing (ratings and movies files required;
    without the users file, users are created with empty attributes). Same upsert/dedup rules as `import_jsonl`."""
    check_rating_threshold(rating_threshold)
    timer = Timer()
    folder = Path(path)
    variant, ratings, items, users = _layout(folder)
    if items is None or not items.exists():
        raise BadInput(f"{folder}: {variant} without {items.name if items else 'its movies file'}")
    if users is not None and not users.exists():
        users = None
    report = ImportReport(source=f"{folder} ({variant})")
    sources = {"items": StagedSource(str(items)), "behaviors": StagedSource(str(ratings))}
    if users is not None:
        sources["users"] = StagedSource(str(users))
    with transaction(con):
        create_staging(con)
        stage = _stage_ml100k if variant == "ml-100k" else _stage_ml1m
        stage(con, items, users, sources, skip_bad)
        check_ids(con, "items", sources["items"], report, skip_bad=skip_bad)
        if users is not None:
            check_ids(con, "users", sources["users"], report, skip_bad=skip_bad)
        _read(
            con,
            "_ml_inter",
            ratings,
            RATING_COLUMNS,
            "\t" if variant == "ml-100k" else "::",
            sources["behaviors"],
            skip_bad,
        )
        kind = f"CASE WHEN rating >= {float(rating_threshold)} THEN 'favorite' ELSE 'detail_view' END"
        con.execute(
            f"INSERT INTO _imp_behaviors SELECT user_id, item_id, NULL, {kind}, "
            f"{epoch_seconds_sql('timestamp')}, rating, {ordinal('_ml_inter')} FROM _ml_inter"
        )
        check_required(con, sources["behaviors"], report, skip_bad)
        check_dangling_items(con, sources["behaviors"], report, skip_bad=skip_bad)
        merge_staged(con, report)
        for t in ("_ml_user", "_ml_item", "_ml_inter"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        drop_staging(con)
    for table, src in sources.items():
        getattr(report, table).rejected = len(src.rejects)
    report.rejects_path = write_rejects(list(sources.values()), rejects_path)
    report.seconds = timer.seconds()
    return report
