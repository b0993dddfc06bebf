"""recgpt_cli.compress and `recgpt compress` (§2.1.1) on a hand-written store with exact expected output."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from recgpt_cli.compress import (
    CompressedUser,
    ItemInfo,
    compress_stats,
    compress_users,
    default_reference_date,
    period_label,
    rule_based_phrase,
)
from recgpt_cli.errors import BadInput
from recgpt_cli.store import open_db

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
REF = date(2025, 6, 30)

ITEMS = [
    ("i1", "Lumina Stainless Steel Cookware Set, 5-Piece", ["Home", "Kitchen", "Cookware"], "Lumina"),
    ("i2", "Trailpeak Waterproof Hiking Boots - Men's", ["Sports", "Outdoor", "Hiking Boots"], "Trailpeak"),
    ("i3", "Little Sprout Anti-Colic Baby Bottle (240ml)", ["Baby", "Feeding", "Baby Bottles"], "Little Sprout"),
    ("i4", "Pawsome Dry Dog Food 12kg", ["Pets", "Dog", "Dog Food"], None),
    ("i5", "Noise Cancelling Headphones", ["Electronics", "Audio", "Headphones"], "Sonix"),
]
# (user, type, ts, item, query, value)
BEHAVIORS = [
    ("u1", "search", "2025-06-28 09:55:00", None, "cookware set", None),
    ("u1", "detail_view", "2025-06-28 10:00:00", "i1", None, None),
    ("u1", "cart", "2025-06-28 10:05:00", "i1", None, None),
    ("u1", "purchase", "2025-06-28 10:10:00", "i1", None, None),
    ("u1", "click", "2025-06-20 10:20:00", "i5", None, None),  # dropped: a plain click before the newest day
    ("u1", "detail_view", "2025-06-20 14:00:00", "i2", None, None),
    ("u1", "detail_view", "2025-06-20 15:00:00", "i5", None, None),
    ("u1", "detail_view", "2025-03-15 12:00:00", "i2", None, None),
    ("u1", "favorite", "2025-03-15 12:01:00", "i2", None, None),
    ("u1", "detail_view", "2025-03-02 08:00:00", "i5", None, None),
    ("u1", "favorite", "2025-03-02 08:01:00", "i5", None, None),
    ("u1", "rating", "2025-03-10 20:00:00", "i4", None, 5.0),
    ("u1", "rating", "2025-03-10 20:01:00", "i3", None, 2.0),  # dropped: low rating
    ("u1", "purchase", "2024-05-01 09:00:00", "i4", None, None),
    ("u1", "purchase", "2024-04-01 09:00:00", "i4", None, None),
    ("u1", "search", "2023-11-11 11:11:00", None, "dog food", None),
    ("u1", "purchase", "2025-07-02 09:00:00", "i3", None, None),  # after the reference date
    ("u2", "click", "2025-06-01 10:00:00", "i1", None, None),
    ("u3", "detail_view", "2024-06-29 10:00:00", "i3", None, None),  # no users row
]

EXPECTED_U1 = "\n".join([
    "2025-06-28(purchase,cart,detail_view) | Lumina Stainless Steel Cookware Set (Cookware)",
    '2025-06-28(search) | search:"cookware set"',
    "2025-06-20(detail_view), 2025-03(favorite,detail_view) | Sonix Noise Cancelling Headphones (Headphones), "
    "Trailpeak Waterproof Hiking Boots (Hiking Boots)",
    "2025-03(rating), 2024(purchase) | Pawsome Dry Dog Food 12kg (Dog Food)",
    '2023(search) | search:"dog food"',
])


def words(texts: list[str]) -> list[int]:
    """A stand-in tokenizer (one token per word) so budgets in these tests are exact and model-free."""
    return [len(t.split()) for t in texts]


def make_db(path: Path) -> Path:
    con = open_db(path)
    con.executemany("INSERT INTO users VALUES (?, ?)", [("u1", '{"age": 30, "gender": "female"}'), ("u2", "{}")])
    con.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL, NULL, '{}')", [(i, t, c, c[-1], b) for i, t, c, b in ITEMS]
    )
    con.executemany("INSERT INTO behaviors VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP), ?)",
                    [(u, i, q, t, ts, v) for u, t, ts, i, q, v in BEHAVIORS])
    con.close()
    return path


@pytest.fixture()
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = open_db(make_db(tmp_path / "t.duckdb"), read_only=True)
    yield c
    c.close()


def by_user(con: duckdb.DuckDBPyConnection, **kw: object) -> dict[str, CompressedUser]:
    kw = {"date": REF, "token_counter": words, **kw}
    return {u.user_id: u for u in compress_users(con, **kw)}  # type: ignore[arg-type]


def test_exact_compressed_form_both_steps(con: duckdb.DuckDBPyConnection) -> None:
    users = by_user(con)
    assert list(users) == ["u1", "u2", "u3"]
    u1 = users["u1"]
    assert u1.compressed == EXPECTED_U1
    assert u1.n_behaviors == 14  # the click, the 2-star rating and the purchase after --date are gone
    assert (u1.truncated, u1.periods_dropped, u1.n_items, u1.n_items_shown) == (False, 0, 6, 6)
    assert u1.n_tokens_compressed == len(EXPECTED_U1.split())
    assert [r["item_id"] for r in u1.recent_items] == ["i1", "i5", "i2"]
    assert u1.recent_items[0] == {"item_id": "i1", "title": ITEMS[0][1], "category_leaf": "Cookware"}
    assert u1.categories == ["Cookware", "Dog Food", "Headphones", "Hiking Boots"]
    assert u1.attributes == {"age": 30, "gender": "female"} and u1.date == "2025-06-30"


def test_naive_serialisation_is_one_line_per_kept_behaviour(con: duckdb.DuckDBPyConnection) -> None:
    seen: list[str] = []

    def spy(texts: list[str]) -> list[int]:
        seen.extend(texts)
        return words(texts)

    users = {u.user_id: u for u in compress_users(con, date=REF, token_counter=spy, user_ids=["u1"])}
    raw = seen[0].split("\n")
    assert len(raw) == users["u1"].n_behaviors == 14
    assert raw[0] == "2023-11-11 search dog food"
    assert raw[-1] == (
        "2025-06-28 purchase Lumina Stainless Steel Cookware Set, 5-Piece (Home > Kitchen > Cookware) Lumina")
    assert users["u1"].n_tokens_raw > 2 * users["u1"].n_tokens_compressed


def test_clicks_dropped_unless_kept(con: duckdb.DuckDBPyConnection) -> None:
    # u1's click on i5 (2025-06-20) is not on u1's newest day: dropped. u2's only behaviour is a click: its newest
    # day, so the session click shows it; without session clicks (§2.1.1 as written) u2 has nothing.
    users = by_user(con)
    assert users["u1"].compressed == EXPECTED_U1
    assert users["u2"].compressed == "2025-06-01(click) | Lumina Stainless Steel Cookware Set (Cookware)"
    assert users["u2"].categories == ["Cookware"] and users["u2"].n_behaviors == 1
    bare = by_user(con, session_clicks=0)
    assert bare["u2"].compressed == "" and bare["u2"].n_behaviors == 0 and not bare["u2"].truncated
    assert bare["u1"].compressed == EXPECTED_U1
    assert users["u3"].attributes == {} and users["u3"].compressed == "2024(detail_view) | " + (
        "Little Sprout Anti-Colic Baby Bottle (Baby Bottles)")
    with_clicks = by_user(con, keep_types=["click", "purchase"], user_ids=["u2", "u1"])
    assert list(with_clicks) == ["u1", "u2"]
    assert with_clicks["u2"].compressed == "2025-06-01(click) | Lumina Stainless Steel Cookware Set (Cookware)"
    assert with_clicks["u1"].compressed.splitlines()[:2] == [
        "2025-06-28(purchase) | Lumina Stainless Steel Cookware Set (Cookware)",
        "2025-06-20(click) | Sonix Noise Cancelling Headphones (Headphones)"]
    with pytest.raises(BadInput, match="--session-clicks"):
        by_user(con, session_clicks=-1)


def test_session_clicks_are_the_newest_of_the_newest_day(tmp_path: Path) -> None:
    c = open_db(make_db(tmp_path / "s.duckdb"))
    c.executemany("INSERT INTO behaviors VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP), ?)", [
        ("u1", "i3", None, "click", "2025-06-28 11:00:00", None),
        ("u1", "i4", None, "click", "2025-06-28 11:05:00", None),
        ("u1", "i2", None, "click", "2025-06-28 11:10:00", None),  # the newest behaviour of all
    ])
    c.close()
    c = open_db(tmp_path / "s.duckdb", read_only=True)
    one = by_user(c, user_ids=["u1"])["u1"]
    assert one.compressed.splitlines()[:3] == [
        "2025-06-28(purchase,cart,detail_view) | Lumina Stainless Steel Cookware Set (Cookware)",
        '2025-06-28(search) | search:"cookware set"',
        "2025-06-28(click), 2025-06-20(detail_view), 2025-03(favorite,detail_view) | "
        "Trailpeak Waterproof Hiking Boots (Hiking Boots)"]
    assert one.recent_items[0]["item_id"] == "i2"  # newest first
    two = by_user(c, user_ids=["u1"], session_clicks=2)["u1"]
    assert "2025-06-28(click), 2025-03(rating), 2024(purchase) | Pawsome Dry Dog Food 12kg (Dog Food)" in (
        two.compressed.splitlines())
    assert "Baby Bottle" not in two.compressed  # the third newest click of the day
    stats = compress_stats(c, date=REF, user_ids=["u1"], session_clicks=2)
    assert stats.by_type["click"] == {"kept": 2, "dropped": 2, "after_date": 0}
    c.close()


def test_budget_drops_oldest_periods_first(con: duckdb.DuckDBPyConnection) -> None:
    expected = "\n".join(EXPECTED_U1.splitlines()[:3] + ["2025-03(rating) | Pawsome Dry Dog Food 12kg (Dog Food)"])
    u1 = by_user(con, max_tokens=len(expected.split()), user_ids=["u1"])["u1"]
    assert u1.compressed == expected
    assert (u1.truncated, u1.periods_dropped, u1.n_items, u1.n_items_shown) == (True, 2, 6, 5)
    assert u1.n_tokens_compressed <= len(expected.split())
    # One word less and the 2025-03 period goes too; the dog food it showed is now only named by the summary line.
    u1 = by_user(con, max_tokens=len(expected.split()) - 1, user_ids=["u1"])["u1"]
    assert u1.compressed == "\n".join(EXPECTED_U1.splitlines()[:2] + [
        "2025-06-20(detail_view) | Sonix Noise Cancelling Headphones (Headphones), "
        "Trailpeak Waterproof Hiking Boots (Hiking Boots)", "2023..2025-03(categories) | Dog Food x1"])
    assert u1.periods_dropped == 3 and u1.n_items_shown == 4  # the search counts
    assert u1.categories == ["Cookware", "Headphones", "Hiking Boots", "Dog Food"]
    plain = by_user(con, max_tokens=len(expected.split()) - 1, user_ids=["u1"], summary_categories=0)["u1"]
    assert plain.compressed == "\n".join(u1.compressed.splitlines()[:-1])
    assert plain.categories == ["Cookware", "Headphones", "Hiking Boots"]


def test_budget_smaller_than_newest_period_keeps_what_fits(con: duckdb.DuckDBPyConnection) -> None:
    u1 = by_user(con, max_tokens=8, user_ids=["u1"])["u1"]
    assert u1.compressed == "2025-06-28(purchase,cart,detail_view) | Lumina Stainless Steel Cookware Set (Cookware)"
    assert u1.truncated and u1.periods_dropped == 4 and u1.n_items_shown == 1


def test_summary_line_names_what_truncation_hid(tmp_path: Path) -> None:
    """Periods dropped for the budget leave a last line naming their items' categories, most items first (ties:
    newest), inside the budget and in at most a quarter of it; `categories` gains them after the shown ones."""
    con = open_db(tmp_path / "sum.duckdb")
    teas = [(f"t{n}", f"Tea {n}", ["Food", "Tea"]) for n in range(16)]
    rows = [*teas, ("k1", "Steel Pan", ["Home", "Cookware"]), ("k2", "Iron Pot", ["Home", "Cookware"]),
            ("d1", "Dog Kibble", ["Pets", "Dog Food"]), ("h1", "Quiet Headphones", ["Audio", "Headphones"])]
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, NULL, NULL, NULL, '{}')",
                    [(i, t, c, c[-1]) for i, t, c in rows])
    when = {"h1": "2025-06-28", "t15": "2023-05-01", "k1": "2024-05-01", "k2": "2023-01-01", "d1": "2024-06-01"}
    con.executemany("INSERT INTO behaviors VALUES ('u7', ?, NULL, 'purchase', CAST(? AS TIMESTAMP), NULL)",
                    [(i, when.get(i, f"2024-02-{int(i[1:] if i[0] == 't' else 0) + 1:02d}") + " 08:00:00")
                     for i, _, _ in rows])
    newest = "2025-06-28(purchase) | Quiet Headphones (Headphones)"  # 5 words; the 2024 line alone is 53
    u = by_user(con, max_tokens=44, user_ids=["u7"])["u7"]
    assert u.compressed == newest + "\n2023..2024(categories) | Tea x16, Cookware x2, Dog Food x1"  # 9 words
    assert u.truncated and u.n_items_shown == 1 and u.n_tokens_compressed == 14
    assert u.categories == ["Headphones", "Tea", "Cookware", "Dog Food"]
    assert by_user(con, max_tokens=44, user_ids=["u7"], summary_categories=2)["u7"].compressed.endswith(
        "| Tea x16, Cookware x2")
    # 32 tokens: the full line (9 words + its newline) is over a quarter (8), so it names fewer categories.
    assert by_user(con, max_tokens=32, user_ids=["u7"])["u7"].compressed == (
        newest + "\n2023..2024(categories) | Tea x16, Cookware x2")
    # Too small for even one name: no summary line, the newest behaviours keep the room.
    assert by_user(con, max_tokens=12, user_ids=["u7"])["u7"].compressed == newest
    assert "(categories)" not in by_user(con, user_ids=["u7"])["u7"].compressed  # nothing hidden, no line
    with pytest.raises(BadInput, match="summary-categories"):
        by_user(con, summary_categories=-1)
    con.close()


def test_one_line_over_budget_keeps_its_newest_items(tmp_path: Path) -> None:
    """A user whose whole history is one line (ml-100k: 100+ ratings in a day) keeps the newest items that fit
    instead of showing nothing."""
    con = open_db(tmp_path / "one.duckdb")
    con.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL, NULL, '{}')", [(i, t, c, c[-1], b) for i, t, c, b in ITEMS]
    )
    con.executemany("INSERT INTO behaviors VALUES ('u9', ?, NULL, 'detail_view', CAST(? AS TIMESTAMP), NULL)",
                    [("i1", "2025-06-28 08:00:00"), ("i2", "2025-06-28 09:00:00"), ("i5", "2025-06-28 10:00:00")])
    full = by_user(con, user_ids=["u9"])["u9"]
    assert full.compressed == ("2025-06-28(detail_view) | Sonix Noise Cancelling Headphones (Headphones), "
                               "Trailpeak Waterproof Hiking Boots (Hiking Boots), Lumina Stainless Steel Cookware "
                               "Set (Cookware)")
    cut = by_user(con, max_tokens=13, user_ids=["u9"])["u9"]  # 7 words a line start + headphones, 6 the boots
    assert cut.compressed == ("2025-06-28(detail_view) | Sonix Noise Cancelling Headphones (Headphones), "
                              "Trailpeak Waterproof Hiking Boots (Hiking Boots)")
    assert (cut.truncated, cut.n_items_shown, cut.n_tokens_compressed) == (True, 2, 13)
    assert by_user(con, max_tokens=12, user_ids=["u9"])["u9"].n_items_shown == 1
    assert by_user(con, max_tokens=6, user_ids=["u9"])["u9"].compressed == ""  # not even the newest item fits
    con.close()


def test_stats_count_kept_dropped_and_lost(con: duckdb.DuckDBPyConnection) -> None:
    stats = compress_stats(con, date=REF, max_tokens=2048)
    assert stats.by_type["click"] == {"kept": 1, "dropped": 1, "after_date": 0}  # u2's is its newest day's
    assert stats.by_type["rating"] == {"kept": 1, "dropped": 1, "after_date": 0}
    assert stats.by_type["purchase"] == {"kept": 3, "dropped": 0, "after_date": 1}
    for u in compress_users(con, date=REF, token_counter=words):
        stats.add(u)
    assert (stats.users, stats.users_empty, stats.items_lost, stats.within_budget) == (3, 0, 0, 1.0)
    assert 0.5 < stats.reduction < 1.0


def test_item_phrase_hook_and_rules() -> None:
    assert rule_based_phrase(ItemInfo("x", "Toy Story (1995)", ("Movies", "Animation"))) == "Toy Story (Animation)"
    assert rule_based_phrase(ItemInfo("x", "A B C D E F G H", (), "Acme")) == "Acme A B C D E F"
    kettle = ItemInfo("x", "Acme Acme Kettle | 1L", ("Kettles",), "Acme")
    assert rule_based_phrase(kettle) == "Acme Acme Kettle (Kettles)"


def test_item_phrase_hook_is_called_once_per_item(con: duckdb.DuckDBPyConnection) -> None:
    calls: list[str] = []

    def upper(item: ItemInfo) -> str:
        calls.append(item.item_id)
        return item.title.upper()

    users = by_user(con, item_phrase=upper)
    assert "LUMINA STAINLESS STEEL COOKWARE SET, 5-PIECE" in users["u1"].compressed
    assert sorted(calls) == ["i1", "i2", "i3", "i4", "i5"]


def test_periods_relative_to_reference_date() -> None:
    assert period_label(date(2025, 6, 1), REF) == "2025-06-01"  # 29 days back
    assert period_label(date(2025, 5, 31), REF) == "2025-05"  # 30 days back
    assert period_label(date(2024, 7, 1), REF) == "2024-07"  # 364 days back
    assert period_label(date(2024, 6, 30), REF) == "2024"  # 365 days back


def test_bad_options(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(BadInput, match="unknown behaviour type"):
        by_user(con, keep_types=["purchase", "like"])
    with pytest.raises(BadInput, match="unknown user id"):
        by_user(con, user_ids=["nobody"])
    with pytest.raises(BadInput, match="at least 1"):
        by_user(con, max_tokens=0)
    assert default_reference_date(con) == date(2025, 7, 2)


def test_results_survive_closing_the_database(tmp_path: Path) -> None:
    c = open_db(make_db(tmp_path / "t.duckdb"), read_only=True)
    stream = compress_users(c, date=REF, token_counter=words)
    c.close()
    assert len(stream) == 3  # type: ignore[arg-type]
    assert [u.user_id for u in stream] == ["u1", "u2", "u3"]


runner = CliRunner()


def invoke(args: list[str]):  # noqa: ANN201 - click's Result
    from recgpt_cli.cli import app

    return runner.invoke(app, args)


@pytest.mark.model
def test_cli_fixture_with_real_tokenizer(tmp_path: Path) -> None:
    db = make_db(tmp_path / "t.duckdb")
    out = tmp_path / "c.jsonl"
    result = invoke(["compress", "--db", str(db), "--date", "2025-06-30", "--out", str(out), "--stats"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in recs] == ["u1", "u2", "u3"]
    assert recs[0]["compressed"] == EXPECTED_U1
    assert set(recs[0]) >= {"user_id", "attributes", "compressed", "n_behaviors", "n_tokens_raw",
                            "n_tokens_compressed", "truncated", "recent_items", "categories"}
    assert 0 < recs[0]["n_tokens_compressed"] < recs[0]["n_tokens_raw"]
    assert "reduction" in result.output and "items lost (untruncated users)" in result.output
    assert "reduction" in result.stderr and result.stdout == ""  # data to --out, table to stderr
    quiet = invoke(["compress", "--db", str(db), "--users", "u3,u1", "--quiet", "--max-tokens", "0"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert [json.loads(line)["user_id"] for line in quiet.stdout.splitlines()] == ["u1", "u3"]
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"user_id": "u2", "interests": []}\n')
    picked = invoke(["compress", "--db", str(db), "--in", str(ids), "--keep", "click", "--date", "2025-06-30"])
    assert picked.exit_code == 0, picked.output
    assert [json.loads(line)["compressed"] for line in picked.stdout.splitlines()] == [
        "2025-06-01(click) | Lumina Stainless Steel Cookware Set (Cookware)"]
    bare = invoke(["compress", "--db", str(db), "--in", str(ids), "--session-clicks", "0", "--date", "2025-06-30"])
    assert bare.exit_code == 0 and json.loads(bare.stdout)["compressed"] == ""  # u2 only clicked
    bad = invoke(["compress", "--db", str(db), "--session-clicks", "-1"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    bad = invoke(["compress", "--db", str(db), "--keep", "purchase,like"])
    assert bad.exit_code == 2 and "unknown behaviour type" in bad.output and "Traceback" not in bad.output
    bad = invoke(["compress", "--db", str(db), "--date", "30/06/2025"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


@pytest.mark.model
@pytest.mark.slow
def test_cli_end_to_end_on_sample_data(tmp_path: Path) -> None:
    from recgpt_cli.importers import import_jsonl

    db = tmp_path / "s.duckdb"
    con = open_db(db)
    import_jsonl(con, **{name: SAMPLE / f"{name}.jsonl" for name in ("users", "items", "behaviors")})
    con.close()
    result = invoke(["compress", "--db", str(db), "--max-tokens", "2048", "--out", "-", "--stats"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(recs) == 300 and all(r["date"] == "2025-06-30" for r in recs)
    assert all(r["n_tokens_compressed"] <= 2048 for r in recs)
    assert sum(r["n_tokens_compressed"] for r in recs) < 0.5 * sum(r["n_tokens_raw"] for r in recs)
    assert all(r["n_items_shown"] == r["n_items"] for r in recs if not r["truncated"])
    assert "reduction" in result.stderr
    # What the budget hid is named on a last line (never when nothing was hidden); --summary-categories 0 drops it.
    summarised = [r for r in recs if r["compressed"].splitlines()[-1:] and "(categories) | " in
                  r["compressed"].splitlines()[-1]]
    assert summarised and all(r["truncated"] for r in summarised)
    assert not any("(categories)" in r["compressed"] for r in recs if not r["truncated"])
    plain = invoke(["compress", "--db", str(db), "--max-tokens", "2048", "--summary-categories", "0"])
    assert plain.exit_code == 0, plain.output
    plain_recs = {(r := json.loads(line))["user_id"]: r for line in plain.stdout.splitlines()}
    assert not any("(categories)" in r["compressed"] for r in plain_recs.values())
    for r in summarised:  # the line takes room from the oldest shown periods, never adds hidden items
        assert r["n_items_shown"] <= plain_recs[r["user_id"]]["n_items_shown"]
    # ... and names more categories in all (a user can lose one: the line names the 12 with the most items)
    assert sum(len(r["categories"]) for r in summarised) > sum(
        len(plain_recs[r["user_id"]]["categories"]) for r in summarised)
    bad = invoke(["compress", "--db", str(db), "--summary-categories", "-1"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    # with no --max-tokens: the budget `align data` renders its training histories at (train = serve)
    from recgpt_cli.align.data import LogsConfig

    default = [json.loads(line) for line in invoke(["compress", "--db", str(db)]).stdout.splitlines()]
    assert len(default) == 300 and all(r["n_tokens_compressed"] <= LogsConfig().history_tokens for r in default)
    assert sum(r["truncated"] for r in default) > sum(r["truncated"] for r in recs)


# ---- split-aware histories (issue 8) ----
# u1's interactions by first time: i1 2025-06-28 10:00 (LOO test), i2 2025-03-15 12:00 (valid), then i3, i5, i4
# (train); u3 has one interaction (train only).


def split_db(tmp_path: Path, protocol: str = "loo") -> Path:
    from recgpt_cli.splits import make_split

    db = make_db(tmp_path / "s.duckdb")
    c = open_db(db)
    make_split(c, protocol)
    c.close()
    return db


def test_split_view_test_phase_hides_test_items_and_cuts_at_newest_visible(tmp_path: Path) -> None:
    from recgpt_cli.compress import SplitView

    c = open_db(split_db(tmp_path), read_only=True)
    users = by_user(c, view=SplitView("loo", "test"))
    c.close()
    u1 = users["u1"]
    # the cut is i2's first behaviour; the i2 favourite a minute later, everything on i1 (test) and the later
    # searches are invisible; ages count back from the cut's day, so March days are day labels now
    assert (u1.split, u1.phase, u1.cut, u1.date) == ("loo", "test", "2025-03-15T12:00:00", "2025-03-15")
    assert u1.compressed == "\n".join([
        "2025-03-15(detail_view) | Trailpeak Waterproof Hiking Boots (Hiking Boots)",
        "2025-03-10(rating), 2024-05(purchase), 2024-04(purchase) | Pawsome Dry Dog Food 12kg (Dog Food)",
        "2025-03-02(favorite,detail_view) | Sonix Noise Cancelling Headphones (Headphones)",
        '2023(search) | search:"dog food"',
    ])
    assert "Cookware" not in u1.compressed and "cookware" not in u1.compressed
    assert [r["item_id"] for r in u1.recent_items] == ["i2", "i4", "i5"]


def test_split_view_valid_phase_hides_valid_and_test_items(tmp_path: Path) -> None:
    from recgpt_cli.compress import SplitView

    c = open_db(split_db(tmp_path), read_only=True)
    users = by_user(c, view=SplitView("loo", "valid"))
    stats = compress_stats(c, date=REF, view=SplitView("loo", "valid"))
    c.close()
    u1 = users["u1"]
    assert u1.phase == "valid" and u1.cut == "2025-03-10T20:01:00"  # i3's first (low) rating
    assert "Trailpeak" not in u1.compressed and "Lumina" not in u1.compressed
    assert "Pawsome" in u1.compressed
    # u2's one interaction is a click: train, so it has a cut, and the session click shows it
    assert users["u2"].compressed.startswith("2025-06-01(click) | ") and users["u2"].cut == "2025-06-01T10:00:00"
    # every i1/i2 behaviour and everything after the cut counts as invisible
    assert stats.by_type["purchase"]["after_date"] == 2 and stats.by_type["purchase"]["kept"] == 2
    assert stats.split == "loo" and stats.phase == "valid"


def test_split_view_recbole_drops_held_out_items_anywhere_in_time(tmp_path: Path) -> None:
    from recgpt_cli.compress import SplitView

    db = split_db(tmp_path, "recbole")
    c = open_db(db, read_only=True)
    hidden = {r[0] for r in c.execute(
        "SELECT item_id FROM splits WHERE protocol='recbole' AND user_id='u1' AND split <> 'train'").fetchall()}
    u1 = by_user(c, view=SplitView("recbole", "valid"))["u1"]
    c.close()
    assert len(hidden) == 2  # 5 interactions -> 3/1/1
    phrases = {i: rule_based_phrase(ItemInfo(i, t, tuple(p), b)) for i, t, p, b in ITEMS}
    for item in hidden:
        assert phrases[item] not in u1.compressed
    assert any(phrases[i] in u1.compressed for i in set(phrases) - hidden - {"i3"})  # i3 was rated 2: dropped


def test_compress_cli_split_makes_the_split_and_refuses_date(tmp_path: Path) -> None:
    from recgpt_cli.cli import app

    db = make_db(tmp_path / "c.duckdb")
    runner = CliRunner()
    res = runner.invoke(app, ["compress", "--db", str(db), "--split", "loo", "--phase", "test", "--quiet"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert {r["user_id"]: (r["split"], r["phase"]) for r in rows}["u1"] == ("loo", "test")
    res = runner.invoke(app, ["compress", "--db", str(db), "--split", "loo", "--date", "2025-06-30"])
    assert res.exit_code == 2 and "--date and --split" in res.output
    res = runner.invoke(app, ["compress", "--db", str(db), "--split", "loo", "--phase", "train"])
    assert res.exit_code == 2 and "--phase" in res.output
    res = runner.invoke(app, ["compress", "--db", str(db), "--phase", "valid"])  # was ignored: the full history
    assert res.exit_code == 2 and "--phase valid needs --split" in res.output
    res = runner.invoke(app, ["compress", "--db", str(db), "--split-seed", "3"])  # was ignored
    assert res.exit_code == 2 and "--split-seed 3 needs --split" in res.output
    # an explicit --split-seed is the stored split's or refused (was: the stored split of another seed, silently)
    res = runner.invoke(app, ["compress", "--db", str(db), "--split", "recbole", "--split-seed", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compress", "--db", str(db), "--split", "recbole", "--split-seed", "4", "--quiet"])
    assert res.exit_code == 2 and "already holds a recbole split made with seed 3" in res.output
    res = runner.invoke(app, ["compress", "--db", str(db), "--split", "recbole", "--quiet"])
    assert res.exit_code == 0 and res.stdout.strip(), res.output


def test_the_summary_span_does_not_depend_on_set_order() -> None:
    # "2024" and "2024-01" start on the same day: the coarser label comes first whatever order the set yields
    from recgpt_cli.compress import period_span

    for periods in (["2024-01", "2024", "2024-11"], ["2024", "2024-11", "2024-01"], ["2024-11", "2024-01", "2024"]):
        assert period_span(periods) == "2024..2024-11"
    assert period_span(["2025-03-02", "2025-03"]) == "2025-03..2025-03-02"
    assert period_span(["2023"]) == "2023" and period_span([]) == ""
