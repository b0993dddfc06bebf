"""recgpt_cli.importers and `recgpt import`: JSONL, RecBole atomic files, raw MovieLens (issue 2)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from recgpt_cli.errors import BadInput
from recgpt_cli.importers import import_jsonl, import_movielens, import_recbole
from recgpt_cli.store import connect, counts, open_db

FIX = Path(__file__).parent / "fixtures" / "import"
GOOD = FIX / "jsonl"
BAD = FIX / "bad"
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture
def con(tmp_path: Path):
    c = open_db(tmp_path / "t.duckdb")
    yield c
    c.close()


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def import_good(con):
    return import_jsonl(con, users=GOOD / "users.jsonl", items=GOOD / "items.jsonl", behaviors=GOOD / "behaviors.jsonl")


# ---------------------------------------------------------------- JSONL


def test_jsonl_imports_fixture_exactly(con) -> None:
    report = import_good(con)
    assert (report.users.inserted, report.items.inserted, report.behaviors.inserted) == (3, 4, 6)
    assert report.behaviors.duplicates == 1  # the repeated rating line
    assert report.users_created == 1  # u9 only appears in behaviours
    assert report.rejected == 0 and report.rejects_path is None
    assert counts(con) == {"users": 4, "items": 4, "behaviors": 6}
    assert rows(con, "SELECT item_id, category_path, category_leaf, brand, price, sales FROM items ORDER BY 1") == [
        ("i1", ["Home", "Kitchen", "Cookware"], "Cookware", "Lodge", 39.9, 1200),
        ("i2", ["Sports", "Outdoor", "Running Shoes"], "Running Shoes", "Salomon", 129.0, None),
        ("i3", ["Food", "Tea"], "Tea", None, None, None),
        ("i4", [], None, None, None, None),
    ]
    assert rows(con, "SELECT extra FROM items WHERE item_id = 'i3'") == [('{"origin":"Longjing"}',)]
    assert rows(con, "SELECT user_id, attributes FROM users ORDER BY 1") == [
        ("3", "{}"),
        ("u1", '{"age":29,"gender":"F","location":"Hangzhou"}'),
        ("u2", '{"age":41,"gender":"M"}'),
        ("u9", "{}"),
    ]
    # Timestamps are stored as naive UTC whatever the input form (Z, +00:00, epoch seconds, naive).
    assert rows(con, "SELECT user_id, item_id, query, type, ts, value FROM behaviors ORDER BY ts") == [
        ("u1", "i1", None, "detail_view", datetime(2024, 3, 1, 10, 0), None),
        ("u1", "i1", None, "favorite", datetime(2024, 3, 1, 10, 5), None),
        ("u1", None, "running shoes", "search", datetime(2024, 3, 1, 11, 0), None),
        ("u2", "i2", None, "purchase", datetime(2024, 3, 2, 8, 0), None),
        ("u2", "i3", None, "rating", datetime(2024, 3, 3, 9, 30), 4.5),
        ("u9", "i4", None, "click", datetime(2024, 3, 4, 12, 0), None),
    ]


def test_reimport_adds_nothing(con) -> None:
    import_good(con)
    before = counts(con)
    again = import_good(con)
    assert counts(con) == before
    assert (again.users.inserted, again.items.inserted, again.behaviors.inserted, again.users_created) == (0, 0, 0, 0)
    assert (again.users.duplicates, again.items.duplicates, again.behaviors.duplicates) == (3, 4, 7)


def test_changed_records_are_updated_not_duplicated(con, tmp_path: Path) -> None:
    import_good(con)
    users = tmp_path / "users.jsonl"
    users.write_text('{"user_id": "u2", "attributes": {"age": 42}}\n{"user_id": "u9", "attributes": {"gender": "F"}}\n')
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "i4", "title": "Mystery box", "category": "Toys > Surprise"}\n')
    report = import_jsonl(con, users=users, items=items)
    assert (report.users.updated, report.users.inserted, report.items.updated) == (2, 0, 1)
    assert rows(con, "SELECT attributes FROM users WHERE user_id IN ('u2', 'u9') ORDER BY user_id") == [
        ('{"age":42}',),
        ('{"gender":"F"}',),
    ]
    assert rows(con, "SELECT category_path, category_leaf FROM items WHERE item_id = 'i4'") == [
        (["Toys", "Surprise"], "Surprise")
    ]
    assert counts(con)["users"] == 4


BAD_CASES = [
    # (case, table, file, line, message part)
    ("malformed JSON", "users", "malformed.jsonl", 2, "malformed JSON"),
    ("wrong type", "items", "wrong_types.jsonl", 2, "price: Input should be a valid number"),
    ("unknown behaviour type", "behaviors", "unknown_type.jsonl", 2, "type: unknown value 'like'"),
    ("non-UTF-8 bytes", "users", "non_utf8.jsonl", 2, "not valid UTF-8"),
    ("empty file", "users", "empty.jsonl", 1, "file is empty"),
    ("missing required field", "behaviors", "missing_field.jsonl", 3, "timestamp: missing required field"),
    ("dangling item id", "behaviors", "dangling_item.jsonl", 2, 'item_id "nope" is in neither the database'),
]


@pytest.mark.parametrize(("case", "table", "name", "line", "part"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_jsonl_fails_at_file_line_and_changes_nothing(con, case, table, name, line, part) -> None:
    import_jsonl(con, items=GOOD / "items.jsonl")  # i1 exists, so only "nope" dangles
    before = counts(con)
    with pytest.raises(BadInput) as err:
        import_jsonl(con, **{table: BAD / name})
    assert err.value.message.startswith(f"{BAD / name}:{line}: ")
    assert part in err.value.message
    assert err.value.exit_code == 2
    assert counts(con) == before


@pytest.mark.parametrize(("table", "row"), [
    ("items", '{"item_id": "i9", "title": "Kettle", "price": true}'),
    ("items", '{"item_id": "i9", "title": "Kettle", "sales": false}'),
    ("behaviors", '{"user_id": "u1", "item_id": "i1", "type": "rating", "timestamp": 1, "value": true}'),
])
def test_a_boolean_where_a_number_belongs_is_refused(con, tmp_path: Path, table: str, row: str) -> None:
    import_jsonl(con, items=GOOD / "items.jsonl")
    bad = tmp_path / f"{table}.jsonl"
    bad.write_text(row + "\n")
    with pytest.raises(BadInput, match=r"\.jsonl:1: .*expected a number, got (true|false)"):
        import_jsonl(con, **{table: bad})


def test_failed_import_rolls_back_every_table(con, tmp_path: Path) -> None:
    import_good(con)
    before = counts(con)
    users = tmp_path / "users.jsonl"
    users.write_text('{"user_id": "u7", "attributes": {}}\n')
    with pytest.raises(BadInput, match="dangling_item.jsonl:2"):
        import_jsonl(con, users=users, behaviors=BAD / "dangling_item.jsonl")
    assert counts(con) == before
    assert rows(con, "SELECT count(*) FROM users WHERE user_id = 'u7'") == [(0,)]
    assert import_good(con).behaviors.inserted == 0  # the connection is still usable


def test_crash_after_merge_rolls_back(con, monkeypatch) -> None:
    import recgpt_cli.importers.jsonl as jsonl_module
    from recgpt_cli.importers.staging import merge_staged

    def merge_then_crash(c, report) -> None:
        merge_staged(c, report)  # every table written ...
        raise RuntimeError("disk full")  # ... then the import dies before COMMIT

    monkeypatch.setattr(jsonl_module, "merge_staged", merge_then_crash)
    with pytest.raises(RuntimeError):
        import_good(con)
    assert counts(con) == {"users": 0, "items": 0, "behaviors": 0}


def test_skip_bad_counts_and_writes_rejects(con, tmp_path: Path) -> None:
    import_jsonl(con, items=GOOD / "items.jsonl")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        b'{"user_id": "u1", "type": "click", "item_id": "i1", "timestamp": 1700000000}\n'
        b'{"user_id": "u1", "type": "like", "item_id": "i1", "timestamp": 1700000000}\n'
        b"not json\n"
        b'{"user_id": "u1", "type": "cart", "item_id": "nope", "timestamp": 1700000000}\n'
        b'{"user_id": "u2", "type": "search", "query": "tea", "timestamp": 1700000001}\n'
    )
    rejects = tmp_path / "out.rejects.jsonl"
    report = import_jsonl(con, behaviors=mixed, skip_bad=True, rejects_path=rejects)
    assert (report.behaviors.inserted, report.behaviors.rejected) == (2, 3)
    assert report.rejects_path == rejects
    lines = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["source"]) for r in lines] == [(2, str(mixed)), (3, str(mixed)), (4, str(mixed))]
    assert "unknown value 'like'" in lines[0]["error"]
    assert "malformed JSON" in lines[1]["error"]
    assert "neither the database nor this import" in lines[2]["error"]
    assert lines[1]["raw"] == "not json"
    # A rerun replaces the rejects file instead of appending to it.
    import_jsonl(con, behaviors=mixed, skip_bad=True, rejects_path=rejects)
    assert len(rejects.read_bytes().splitlines()) == 3


def test_skip_bad_default_rejects_path_is_beside_input(con, tmp_path: Path) -> None:
    src = tmp_path / "users.jsonl"
    shutil.copy(BAD / "malformed.jsonl", src)
    report = import_jsonl(con, users=src, skip_bad=True)
    assert report.users.inserted == 2 and report.users.rejected == 1
    assert report.rejects_path == tmp_path / "users.jsonl.rejects.jsonl"


def test_only_one_stdin_and_something_to_import(con) -> None:
    with pytest.raises(BadInput, match="only one"):
        import_jsonl(con, users="-", items="-")
    with pytest.raises(BadInput, match="nothing to import"):
        import_jsonl(con)


# ---------------------------------------------------------------- RecBole


def test_recbole_maps_atomic_files(con) -> None:
    report = import_recbole(con, FIX / "recbole")
    assert (report.users.inserted, report.items.inserted, report.behaviors.inserted) == (2, 3, 4)
    assert report.users_created == 1  # user 3 has no .user row
    assert rows(con, "SELECT * FROM items ORDER BY item_id") == [
        ("10", "Toy Story", ["Movies", "Animation"], "Animation", None, None, None,
         '{"genres":["Animation","Children\'s","Comedy"],"release_year":"1995"}'),
        ("11", "GoldenEye", ["Movies", "Action"], "Action", None, None, None,
         '{"genres":["Action","Adventure","Thriller"],"release_year":"1995"}'),
        ("12", "Misérables, Les", ["Movies", "Drama"], "Drama", None, None, None,
         '{"genres":["Drama","Musical"],"release_year":"1995"}'),
    ]  # fmt: skip
    assert rows(con, "SELECT * FROM users ORDER BY user_id") == [
        ("1", '{"age":24,"gender":"M","occupation":"technician","location":"85711"}'),
        ("2", '{"age":53,"gender":"F","occupation":"other","location":"94043"}'),
        ("3", "{}"),
    ]
    assert rows(con, "SELECT user_id, item_id, type, ts, value FROM behaviors ORDER BY ts") == [
        ("1", "10", "favorite", datetime(1997, 12, 4, 15, 55, 49), 5.0),
        ("1", "11", "detail_view", datetime(1997, 12, 4, 15, 55, 50), 3.0),
        ("2", "10", "favorite", datetime(1997, 12, 4, 15, 55, 51, 500000), 4.0),
        ("3", "12", "detail_view", datetime(1997, 12, 4, 15, 55, 52), 1.0),
    ]
    again = import_recbole(con, FIX / "recbole")
    assert again.behaviors.inserted == 0 and again.behaviors.duplicates == 4
    assert counts(con) == {"users": 3, "items": 3, "behaviors": 4}


def test_recbole_rating_threshold_is_configurable(con) -> None:
    import_recbole(con, FIX / "recbole", rating_threshold=3)
    assert rows(con, "SELECT type, count(*) FROM behaviors GROUP BY 1 ORDER BY 1") == [
        ("detail_view", 1),
        ("favorite", 3),
    ]


def test_recbole_without_item_file_creates_items(con) -> None:
    report = import_recbole(con, FIX / "recbole_noitem")
    assert (report.items_created, report.users_created, report.behaviors.inserted) == (2, 2, 3)
    assert rows(con, "SELECT item_id, title, category_path FROM items ORDER BY 1") == [
        ("b1", "b1", []),
        ("b2", "b2", []),
    ]
    assert rows(con, "SELECT DISTINCT type FROM behaviors") == [("detail_view",)]


def _recbole_dir(tmp_path: Path, inter: str) -> Path:
    d = tmp_path / "ds"
    d.mkdir()
    shutil.copy(FIX / "recbole" / "tiny.item", d / "ds.item")
    (d / "ds.inter").write_bytes(inter.encode("latin-1"))  # latin-1 only matters for the non-UTF-8 case
    return d


RB_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


@pytest.mark.parametrize(
    ("body", "line", "part"),
    [
        ("1\t10\t5\t881250949\n1\t11\tfive\t881250950\n", 3, 'bad value in column "rating"'),
        ("1\t10\t5\t881250949\n\n1\t11\t881250950\n", 4, "expected columns: 4 found: 3"),
        ("1\t10\t5\t881250949\n1\t99\t5\t881250950\n", 3, 'item_id "99" is in neither'),
        ("1\t10\t5\t881250949\n\t11\t5\t881250950\n", 3, "missing user id"),
        ("1\t10\t5\t881250949\nZ\u00fcrich\t11\t3\t881250950\n", 3, "not utf-8"),
    ],
    ids=["bad float", "missing column", "dangling item", "empty user id", "non-UTF-8"],
)
def test_recbole_bad_rows_fail_at_file_line(con, tmp_path: Path, body: str, line: int, part: str) -> None:
    d = _recbole_dir(tmp_path, RB_HEADER + body)
    with pytest.raises(BadInput) as err:
        import_recbole(con, d)
    assert err.value.message.startswith(f"{d / 'ds.inter'}:{line}: ")
    assert part in err.value.message
    assert counts(con) == {"users": 0, "items": 0, "behaviors": 0}


def test_recbole_skip_bad_and_header_errors(con, tmp_path: Path) -> None:
    body = "1\t10\t5\t1\n1\t11\tfive\t2\n\t11\t5\t3\n2\t99\t1\t4\n2\t11\t1\t5\n"
    d = _recbole_dir(tmp_path, RB_HEADER + body)
    report = import_recbole(con, d, skip_bad=True, rejects_path=tmp_path / "r.jsonl")
    assert (report.behaviors.inserted, report.behaviors.rejected) == (2, 3)
    rejects = [orjson.loads(x) for x in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    # Exact lines even when parse rejects (line 3) and row checks (4: no user, 5: dangling item) interleave.
    assert [(r["line"], r["error"].split(" ")[0]) for r in rejects] == [(3, "bad"), (4, "missing"), (5, "item_id")]
    (d / "ds.inter").write_text("user_id:token\titem_id:token\n1\t10\n")
    with pytest.raises(BadInput, match="ds.inter:1: no timestamp field"):
        import_recbole(con, d)
    (d / "ds.inter").write_text("user_id:token\titem_id:tok\n1\t10\n")
    with pytest.raises(BadInput, match="ds.inter:1: bad header field 'item_id:tok'"):
        import_recbole(con, d)
    with pytest.raises(BadInput, match="no .inter file"):
        import_recbole(con, FIX / "ml-1m")


# ---------------------------------------------------------------- MovieLens


def test_movielens_100k(con) -> None:
    report = import_movielens(con, FIX / "ml-100k")
    assert (report.users.inserted, report.items.inserted, report.behaviors.inserted, report.users_created) == (
        2,
        3,
        4,
        1,
    )
    assert rows(con, "SELECT title, category_path, category_leaf, extra FROM items WHERE item_id = '12'") == [
        ("Misérables, Les (1995)", ["Movies", "Drama"], "Drama",
         '{"genres":["Drama","Musical"],"year":1995,"release_date":"01-Jan-1995","imdb_url":null}'),
    ]  # fmt: skip
    assert rows(con, "SELECT attributes FROM users WHERE user_id = '1'") == [
        ('{"age":24,"gender":"M","occupation":"technician","location":"85711"}',)
    ]
    assert rows(con, "SELECT user_id, item_id, type, ts, value FROM behaviors ORDER BY ts") == [
        ("1", "10", "favorite", datetime(1997, 12, 4, 15, 55, 49), 5.0),
        ("1", "11", "detail_view", datetime(1997, 12, 4, 15, 55, 50), 3.0),
        ("2", "10", "favorite", datetime(1997, 12, 4, 15, 55, 51), 4.0),
        ("3", "12", "detail_view", datetime(1997, 12, 4, 15, 55, 52), 1.0),
    ]


def test_movielens_1m(con) -> None:
    report = import_movielens(con, FIX / "ml-1m", rating_threshold=5)
    assert (report.users.inserted, report.items.inserted, report.behaviors.inserted) == (2, 3, 4)
    assert rows(con, "SELECT item_id, title, category_path, extra FROM items ORDER BY 1") == [
        (
            "10",
            "Toy Story (1995)",
            ["Movies", "Animation"],
            '{"genres":["Animation","Children\'s","Comedy"],"year":1995}',
        ),
        ("11", "GoldenEye (1995)", ["Movies", "Action"], '{"genres":["Action","Adventure","Thriller"],"year":1995}'),
        ("12", "Misérables, Les (1995)", ["Movies", "Drama"], '{"genres":["Drama","Musical"],"year":1995}'),
    ]
    assert rows(con, "SELECT * FROM users ORDER BY 1") == [
        ("1", '{"age":1,"age_group":"Under 18","gender":"F","occupation":"K-12 student","location":"48067"}'),
        ("2", '{"age":56,"age_group":"56+","gender":"M","occupation":"self-employed","location":"70072"}'),
        ("3", "{}"),
    ]
    assert rows(con, "SELECT type, count(*) FROM behaviors GROUP BY 1 ORDER BY 1") == [
        ("detail_view", 3),
        ("favorite", 1),
    ]
    assert import_movielens(con, FIX / "ml-1m", rating_threshold=5).behaviors.inserted == 0


def fixture_with_line(tmp_path: Path, dataset: str, file: str, line: str) -> Path:
    """A copy of fixture `dataset` under tmp_path with `line` appended to its `file`."""
    d = tmp_path / dataset
    shutil.copytree(FIX / dataset, d)
    with (d / file).open("a") as fh:
        fh.write(line + "\n")
    return d


def test_movielens_bad_input(con, tmp_path: Path) -> None:
    d = fixture_with_line(tmp_path, "ml-1m", "ratings.dat", "4::10::x::978300760")
    with pytest.raises(BadInput) as err:
        import_movielens(con, d)
    assert err.value.message.startswith(f"{d / 'ratings.dat'}:5: ")
    assert counts(con) == {"users": 0, "items": 0, "behaviors": 0}
    with pytest.raises(BadInput, match="not a MovieLens folder"):
        import_movielens(con, FIX / "recbole")


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def invoke(args: list[str], **kw):
    from recgpt_cli.cli import app  # imported here so the library tests above run even if another command breaks

    return runner.invoke(app, args, **kw)


def test_cli_jsonl_ok_then_bad(tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    args = ["import", "jsonl", "--db", str(db), "--users", str(GOOD / "users.jsonl")]
    result = invoke([*args, "--items", str(GOOD / "items.jsonl"), "--behaviors", str(GOOD / "behaviors.jsonl")])
    assert result.exit_code == 0, result.output
    assert "behaviors" in result.stderr and "users (from behaviours)" in result.stderr
    bad = invoke(["import", "jsonl", "--db", str(db), "--behaviors", str(BAD / "unknown_type.jsonl")])
    assert bad.exit_code == 2
    assert f"{BAD / 'unknown_type.jsonl'}:2:" in bad.output
    assert "Traceback" not in bad.output
    with connect(db) as c:
        assert counts(c) == {"users": 4, "items": 4, "behaviors": 6}
    assert "dated after today" not in result.stderr
    # a behaviour from the far future is kept but said: compress would date every history from it
    future = tmp_path / "future.jsonl"
    future.write_text(orjson.dumps({"user_id": "u1", "type": "detail_view", "item_id": "i2",
                                    "timestamp": "3024-01-01T00:00:00Z"}).decode() + "\n")
    result = invoke(["import", "jsonl", "--db", str(db), "--behaviors", str(future)])
    assert result.exit_code == 0, result.output
    assert "note: 1 behaviours are dated after today (the latest 3024-01-01 00:00:00)" in result.stderr


def test_cli_stdin_quiet_and_skip_bad(tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    result = invoke(
        ["import", "jsonl", "--db", str(db), "--users", "-", "--quiet"], input=(GOOD / "users.jsonl").read_text()
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""
    result = invoke(["import", "jsonl", "--db", str(db), "--users", str(BAD / "malformed.jsonl"), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "1 bad rows skipped" in result.stderr
    rejects = tmp_path / "d.duckdb.rejects.jsonl"
    assert [orjson.loads(x)["line"] for x in rejects.read_bytes().splitlines()] == [2]


def test_cli_failed_import_into_new_db_leaves_no_file(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    result = invoke(["import", "jsonl", "--db", str(db), "--items", str(BAD / "wrong_types.jsonl")])
    assert result.exit_code == 2
    assert f"{BAD / 'wrong_types.jsonl'}:2:" in result.output and "Traceback" not in result.output
    assert not db.exists()


def test_cli_recbole_and_movielens(tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    result = invoke(["import", "recbole", str(FIX / "recbole"), "--db", str(db), "--rating-threshold", "5"])
    assert result.exit_code == 0, result.output
    result = invoke(["import", "movielens", str(FIX / "ml-1m"), "--db", str(tmp_path / "m.duckdb")])
    assert result.exit_code == 0, result.output
    with connect(db) as c:
        assert rows(c, "SELECT count(*) FROM behaviors WHERE type = 'favorite'") == [(1,)]
    bad = invoke(["import", "movielens", str(tmp_path / "nope"), "--db", str(db)])
    assert bad.exit_code == 2 and "no such folder" in bad.output and "Traceback" not in bad.output


def test_sample_data_imports_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    args = ["import", "jsonl", "--db", str(db), "--skip-bad"]
    for name in ("users", "items", "behaviors"):
        args += [f"--{name}", str(SAMPLE / f"{name}.jsonl")]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "bad rows skipped" not in result.output
    assert not (tmp_path / "s.duckdb.rejects.jsonl").exists()
    with connect(db) as c:
        n = counts(c)
        assert n["users"] > 0 and n["items"] > 0 and n["behaviors"] > 0
        assert rows(c, "SELECT count(*) FROM items WHERE category_leaf IS DISTINCT FROM category_path[-1]") == [(0,)]


# ---------------------------------------------------------------- duplicate ids, id types, rejects as written


def test_jsonl_conflicting_duplicate_id_is_bad_input(con, tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    # Line 2 repeats line 1 exactly (spacing aside): a duplicate. Line 3 changes the record: bad input.
    users.write_text(
        '{"user_id":"u1","attributes":{}}\n{"user_id": "u1", "attributes": {}}\n{"user_id":"u1","attributes":{"a":1}}\n'
    )
    with pytest.raises(BadInput) as err:
        import_jsonl(con, users=users)
    assert err.value.message == f"{users}:3: duplicate user_id 'u1' with different content (first at line 1)"
    assert err.value.exit_code == 2
    assert counts(con) == {"users": 0, "items": 0, "behaviors": 0}
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id":"i1","title":"Kettle"}\n\n{"item_id":"i1","title":"Kettle 2l"}\n')
    with pytest.raises(BadInput) as err:
        import_jsonl(con, items=items)
    assert err.value.message == f"{items}:3: duplicate item_id 'i1' with different content (first at line 1)"
    # An exact repeat only is still a counted duplicate, as before.
    users.write_text('{"user_id":"u1","attributes":{"a":1}}\n{"user_id":"u1","attributes":{"a":1}}\n')
    report = import_jsonl(con, users=users)
    assert (report.users.inserted, report.users.duplicates) == (1, 1)


def test_jsonl_conflicting_duplicate_skip_bad_keeps_first_and_rejects_later(con, tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    later = '{"user_id": "u1",  "attributes": {"a": 1}}'
    users.write_text(f'{{"user_id":"u1","attributes":{{}}}}\n{later}\n{{"user_id":"u2"}}\n')
    rejects = tmp_path / "r.jsonl"
    report = import_jsonl(con, users=users, skip_bad=True, rejects_path=rejects)
    assert (report.users.inserted, report.users.duplicates, report.users.rejected) == (2, 0, 1)
    assert rows(con, "SELECT user_id, attributes FROM users ORDER BY 1") == [("u1", "{}"), ("u2", "{}")]
    [rej] = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    assert (rej["source"], rej["line"], rej["raw"]) == (str(users), 2, later)
    assert rej["error"] == "duplicate user_id 'u1' with different content (first at line 1)"


def test_recbole_and_movielens_conflicting_duplicate_ids(con, tmp_path: Path) -> None:
    d = _recbole_dir(tmp_path, RB_HEADER + "1\t10\t5\t881250949\n")
    with (d / "ds.item").open("a") as fh:
        fh.write("\n11\tGoldenEye II\t1995\tAction\n")  # after a blank line: file line 6, item 11 is at line 3
    with pytest.raises(BadInput) as err:
        import_recbole(con, d)
    assert err.value.message == f"{d / 'ds.item'}:6: duplicate item_id '11' with different content (first at line 3)"
    report = import_recbole(con, d, skip_bad=True, rejects_path=tmp_path / "r.jsonl")
    assert (report.items.inserted, report.items.rejected) == (3, 1)
    assert rows(con, "SELECT title FROM items WHERE item_id = '11'") == [("GoldenEye",)]
    [rej] = [orjson.loads(x) for x in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    assert (rej["line"], rej["raw"]) == (6, "11\tGoldenEye II\t1995\tAction")

    ml = fixture_with_line(tmp_path, "ml-1m", "users.dat", "1::M::25::3::10001")
    with pytest.raises(BadInput) as err:
        import_movielens(con, ml)
    assert err.value.message == f"{ml / 'users.dat'}:3: duplicate user_id '1' with different content (first at line 1)"


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        ("users", '{"user_id": 5.0, "attributes": {}}', "user_id must be a string, got float"),
        ("users", '{"user_id": true}', "user_id must be a string, got bool"),
        ("items", '{"item_id": ["i1"], "title": "x"}', "item_id must be a string, got list"),
        ("behaviors", '{"user_id": "u1", "type": "click", "item_id": 1.5, "timestamp": 1}',
         "item_id must be a string, got float"),
    ],
    ids=["float", "bool", "list", "behaviour item_id"],
)  # fmt: skip
def test_jsonl_ids_must_be_strings(con, tmp_path: Path, table: str, line: str, message: str) -> None:
    src = tmp_path / f"{table}.jsonl"
    src.write_text(line + "\n")
    with pytest.raises(BadInput) as err:
        import_jsonl(con, **{table: src})
    assert err.value.message == f"{src}:1: {message}"
    assert err.value.exit_code == 2
    report = import_jsonl(con, **{table: src}, skip_bad=True, rejects_path=tmp_path / "r.jsonl")
    assert getattr(report, table).rejected == 1
    [rej] = [orjson.loads(x) for x in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    assert (rej["line"], rej["error"], rej["raw"]) == (1, message, line)


def test_jsonl_integer_ids_are_read_as_their_digits(con, tmp_path: Path) -> None:
    # Kept on purpose (the fixture users.jsonl has one): exact, and common in exported datasets.
    src = tmp_path / "users.jsonl"
    src.write_text('{"user_id": 5, "attributes": {}}\n{"user_id": "5", "attributes": {}}\n')
    report = import_jsonl(con, users=src)
    assert (report.users.inserted, report.users.duplicates) == (1, 1)
    assert rows(con, "SELECT user_id FROM users") == [("5",)]


def test_skip_bad_rejects_keep_the_input_line_and_can_be_reimported(con, tmp_path: Path) -> None:
    import_jsonl(con, items=GOOD / "items.jsonl")
    dangling = '{"user_id": "u1", "type": "cart",  "item_id": "nope", "timestamp": "2024-01-01 00:00:00"}'
    invalid = '{"user_id":"u1","type":"like","item_id":"i1","timestamp":1700000000}'
    src = tmp_path / "b.jsonl"
    src.write_text(f'{dangling}\n{{"user_id":"u1","type":"click","item_id":"i1","timestamp":1700000000}}\n{invalid}\n')
    rejects = tmp_path / "r.jsonl"
    report = import_jsonl(con, behaviors=src, skip_bad=True, rejects_path=rejects)
    assert (report.behaviors.inserted, report.behaviors.rejected) == (1, 2)
    got = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    assert [(r["source"], r["line"], r["raw"]) for r in got] == [(str(src), 1, dangling), (str(src), 3, invalid)]
    # Fixed by hand, the rejected lines import as they are.
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("\n".join(r["raw"].replace("nope", "i2").replace("like", "favorite") for r in got) + "\n")
    assert import_jsonl(con, behaviors=fixed).behaviors.inserted == 2


def test_skip_bad_stdin_rejects_keep_the_input_line(tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    line = '{"user_id": "u1", "type": "cart", "item_id": "nope", "timestamp": 1700000000}'
    result = invoke(["import", "jsonl", "--db", str(db), "--behaviors", "-", "--skip-bad"], input=line + "\n")
    assert result.exit_code == 0, result.output
    [rej] = [orjson.loads(x) for x in (tmp_path / "d.duckdb.rejects.jsonl").read_bytes().splitlines()]
    assert (rej["source"], rej["line"], rej["raw"]) == ("<stdin>", 1, line)
    result = invoke(["import", "jsonl", "--db", str(db), "--users", "-"], input='{"user_id": "u1"}\nnot json\n')
    assert result.exit_code == 2 and "<stdin>:2: malformed JSON" in result.output


def test_recbole_and_movielens_row_check_rejects_keep_the_input_line(con, tmp_path: Path) -> None:
    d = _recbole_dir(tmp_path, RB_HEADER + "1\t10\t5\t1\n2\t99\t1\t4\n")
    import_recbole(con, d, skip_bad=True, rejects_path=tmp_path / "r.jsonl")
    [rej] = [orjson.loads(x) for x in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    assert (rej["source"], rej["line"], rej["raw"]) == (str(d / "ds.inter"), 3, "2\t99\t1\t4")
    ml = fixture_with_line(tmp_path, "ml-100k", "u.data", "3\t77\t4\t881250960")
    n = len((ml / "u.data").read_text().splitlines())
    import_movielens(con, ml, skip_bad=True, rejects_path=tmp_path / "m.jsonl")
    [rej] = [orjson.loads(x) for x in (tmp_path / "m.jsonl").read_bytes().splitlines()]
    assert (rej["source"], rej["line"], rej["raw"]) == (str(ml / "u.data"), n, "3\t77\t4\t881250960")
