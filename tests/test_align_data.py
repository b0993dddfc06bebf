"""recgpt_cli.align.data / samples: alignment samples from logs on a hand-written store, exact expected samples
(purification and balancing included), the sample store, and `recgpt align data`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from recgpt_cli.align import data as align_data
from recgpt_cli.align.data import Engagement, LogsConfig, build_from_logs, log_interests, title_tag
from recgpt_cli.align.samples import Sample, load_samples, open_samples, reply_json, save_samples
from recgpt_cli.catalogue import Catalogue
from recgpt_cli.cli import app
from recgpt_cli.errors import BadInput
from recgpt_cli.splits import make_split
from recgpt_cli.store import open_db

# (item, title, leaf, brand). h4 is mislabelled: a jacket filed under Hiking Boots (purification must drop it).
ITEMS = [
    ("h1", "Trailpeak Waterproof Hiking Boots", "Hiking Boots", "Trailpeak"),
    ("t1", "Lumina Ceramic Teapot, 1L", "Teapots", "Lumina"),
    ("k1", "Steel Kitchen Timer", "Kitchen Timers", None),
    ("h2", "Summit Leather Hiking Boots", "Hiking Boots", "Summit"),
    ("t2", "Glass Teapot with Infuser", "Teapots", None),
    ("h3", "Ridge Waterproof Trekking Boots (Men's)", "Hiking Boots", "Ridge"),
    ("x1", "Bamboo Cutting Board", "Cutting Boards", None),
    ("h4", "Alpine Insulated Snow Jacket", "Hiking Boots", "Alpine"),
    ("t3", "Cast Iron Teapot, 800ml", "Teapots", None),
    ("h5", "Trailpeak Suede Mountaineering Boots", "Hiking Boots", "Trailpeak"),
    ("v1", "Velvet Valid Teapot", "Teapots", None),
    ("z1", "Zephyr Test Teapot", "Teapots", None),
]
# u1's engagements in time order: 10 train, then valid (v1) and test (z1) by leave-one-out
U1 = [("h1", "2025-01-05"), ("t1", "2025-01-20"), ("k1", "2025-02-01"), ("h2", "2025-02-03"), ("t2", "2025-02-10"),
      ("h3", "2025-02-15"), ("x1", "2025-02-20"), ("h4", "2025-02-25"), ("t3", "2025-03-01"), ("h5", "2025-04-20"),
      ("v1", "2025-05-01"), ("z1", "2025-06-01")]


class KeywordPhi:
    """φ stand-in: a text's category by keyword (the real φ is a naive Bayes fitted on the catalogue)."""

    RULES = (("teapot", "Teapots"), ("boot", "Hiking Boots"), ("jacket", "Jackets"), ("timer", "Kitchen Timers"),
             ("board", "Cutting Boards"))

    def predict(self, texts: Sequence[str], k: int = 1) -> list[list[tuple[str, float]]]:
        out = []
        for t in texts:
            hits = [c for w, c in self.RULES if w in t.lower()] or ["Other"]
            out.append([(hits[0], 1.0)])
        return out


def make_store(path: Path) -> Path:
    con = open_db(path)
    con.executemany("INSERT INTO users VALUES (?, ?)", [("u1", '{"age": 41}'), ("u2", "{}")])
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL, NULL, '{}')",
                    [(i, t, ["Shop", c], c, b) for i, t, c, b in ITEMS])
    rows = [("u1", item, "detail_view", f"{day} 10:00:00") for item, day in U1]
    rows += [("u2", item, "detail_view", f"{day} 11:00:00") for item, day in U1]  # u2 is excluded below
    con.executemany("INSERT INTO behaviors VALUES (?, ?, NULL, ?, CAST(? AS TIMESTAMP), NULL)", rows)
    make_split(con, "loo")
    con.close()
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "a.duckdb")


def catalogue() -> Catalogue:
    return Catalogue.from_items([(t, ["Shop", c], b) for _, t, c, b in ITEMS], phi=KeywordPhi())  # type: ignore[arg-type]


def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def build(store: Path, **kw: object) -> list[Sample]:
    cfg = LogsConfig(**{"cuts": 1, **kw})  # type: ignore[arg-type]
    con = open_db(store, read_only=True)
    try:
        return list(build_from_logs(con, ["interests", "tags"], cfg, exclude=["u2"], catalogue=catalogue(),
                                    token_counter=words))
    finally:
        con.close()


def test_title_tag_drops_brand_sizes_and_details() -> None:
    assert title_tag("Brightnest Nonstick Cookware Set, 28cm", "Brightnest") == "nonstick cookware set"
    assert title_tag("Toy Story (1995)", None) == "toy story"
    assert title_tag("Pixelon 4K Action Camera 60fps", "Pixelon") == "action camera"
    assert title_tag("Very Long Super Light Waterproof Trail Running Shoe", None) == "very long super light waterproof"


def test_log_interests_rank_by_count_then_recency_with_stage() -> None:
    def e(item: str, day: str, leaf: str) -> Engagement:
        return Engagement(item, datetime.fromisoformat(day), f"{leaf} thing {item}", leaf, None)

    history = [e("a", "2025-01-01", "Tea"), e("b", "2025-02-01", "Tea"), e("c", "2025-02-10", "Golf"),
               e("d", "2025-02-11", "Golf"), e("f", "2025-02-12", "Golf"), e("g", "2025-02-13", "Yoga")]
    got = log_interests(history, datetime(2025, 2, 14), max_interests=2, rank="count")
    assert [(g["interest"], g["stage"]) for g in got] == [("golf", "short-term"), ("tea", "long-term")]
    assert got[0]["reason"] == "3 golf items over 1 month, lately golf thing f"  # Yoga: one item, not an interest
    # the default ranks the newest engagement's category first, one engagement or not: where the user is now
    got = log_interests(history, datetime(2025, 2, 14), max_interests=2)
    assert [(g["interest"], g["stage"]) for g in got] == [("yoga", "short-term"), ("golf", "short-term")]
    assert got[0]["reason"] == "1 yoga item over 1 month, lately yoga thing g"
    history.append(e("h", "2025-02-13", "Tea"))  # the newest is a Tea now: no category twice
    assert [g["interest"] for g in log_interests(history, datetime(2025, 2, 14), 3)] == ["tea", "golf"]


def test_log_interests_rank_by_recency_weights_newer_engagements() -> None:
    def e(item: str, day: str, leaf: str) -> Engagement:
        return Engagement(item, datetime.fromisoformat(day), f"{leaf} thing {item}", leaf, None)

    # weights 0.9^(engagements after): Golf 0.9^6 + 0.9^5 + 0.9^4 = 1.78, Yoga 0.9^3 + 0.9^2 = 1.54,
    # Tea 0.9 + 1 = 1.9; by count Golf (3) leads and Tea beats Yoga on the newest engagement
    history = [e("c", "2025-01-10", "Golf"), e("d", "2025-01-11", "Golf"), e("f", "2025-01-12", "Golf"),
               e("y1", "2025-02-01", "Yoga"), e("y2", "2025-02-02", "Yoga"),
               e("a", "2025-02-10", "Tea"), e("b", "2025-02-11", "Tea")]
    cut = datetime(2025, 2, 14)
    assert [g["interest"] for g in log_interests(history, cut, 3, rank="count")] == ["golf", "tea", "yoga"]
    assert [g["interest"] for g in log_interests(history, cut, 3, rank="recency")] == ["tea", "golf", "yoga"]
    # an older Yoga engagement: Yoga 1.54 + 0.9^7 = 2.02 leads by recency; by count it ties Golf and is newer
    history.insert(0, e("y0", "2025-01-01", "Yoga"))
    assert [g["interest"] for g in log_interests(history, cut, 3, rank="count")] == ["yoga", "golf", "tea"]
    assert [g["interest"] for g in log_interests(history, cut, 2, rank="recency")] == ["yoga", "tea"]
    with pytest.raises(ValueError, match="rank"):
        log_interests(history, cut, 3, rank="latest")


def test_logs_build_exact_samples_with_purification(store: Path) -> None:
    samples = build(store)
    assert [s.task for s in samples] == ["interest_mining", "tag_prediction", "tag_prediction"]
    assert {s.user_id for s in samples} == {"u1"}  # u2 excluded
    interests, teapots, boots = samples
    # the cut is the 5th train engagement (t2, 2025-02-10); both categories span January and February
    assert interests.meta["cut"] == "2025-02-10T10:00:00"
    assert orjson.loads(interests.target) == {"interests": [
        {"interest": "teapots", "stage": "long-term",
         "reason": "2 teapots items over 2 months, lately glass teapot with infuser"},
        {"interest": "hiking boots", "stage": "long-term",
         "reason": "2 hiking boots items over 2 months, lately leather hiking boots"}]}
    # tags: engagements in the 30 days after the cut, in the interest's category; h5 is 69 days later
    assert orjson.loads(teapots.target) == {"tags": [
        {"item_tag": "cast iron teapot", "reason": "after glass teapot with infuser in your teapots history",
         "serves_interest": "I1"}]}
    # the mislabelled jacket (h4) is purified away: φ puts it outside the interest's categories
    assert orjson.loads(boots.target) == {"tags": [
        {"item_tag": "waterproof trekking boots", "reason": "after leather hiking boots in your hiking boots history",
         "serves_interest": "I2"}]}
    assert boots.meta["candidates"] == 2 and boots.meta["kept"] == 1
    assert (teapots.category, boots.category) == ("Teapots", "Hiking Boots")


def test_samples_are_rendered_with_the_stage_prompts_and_never_see_after_the_cut(store: Path) -> None:
    from recgpt_cli.llm.prompts import load_prompt

    samples = build(store)
    interest_prompt = load_prompt("interest_mining")
    assert samples[0].messages[0]["content"] == interest_prompt.render(
        {k: LogsConfig.max_interests if k == "max_interests" else "" for k in interest_prompt.placeholders}
    )[0]["content"]  # the file's
    assert "Recommend exactly 3 new products for interest I1" in samples[1].messages[-1]["content"]
    for s in samples:
        text = json.dumps(s.messages)
        # nothing after the cut (targets), and never the valid/test items
        for title in ("Trekking", "Cast Iron", "Snow Jacket", "Cutting Board", "Mountaineering", "Velvet", "Zephyr"):
            assert title not in text
        assert "Velvet" not in s.target and "Zephyr" not in s.target


def test_balancing_caps_samples_per_user_and_category(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # three cuts = after the 2nd (too little history), 5th and 8th train engagement; with a 90-day window both
    # later cuts make a boots sample; at one per user and category only the first survives
    both = build(store, cuts=3, window_days=90)
    assert sum(s.task == "tag_prediction" and s.category == "Hiking Boots" for s in both) == 2
    monkeypatch.setattr(align_data, "MAX_PER_CATEGORY", 1)
    capped = build(store, cuts=3, window_days=90)
    assert sum(s.task == "tag_prediction" and s.category == "Hiking Boots" for s in capped) == 1
    monkeypatch.setattr(align_data, "MAX_TAGS_PER_USER", 1)
    assert sum(len(orjson.loads(s.target)["tags"]) for s in build(store) if s.task == "tag_prediction") == 1


def test_a_slice_of_the_logs_has_no_cut_or_target_outside_it(store: Path) -> None:
    # the whole log (two cuts: after the 3rd, too little history, and the 7th train engagement) for reference
    whole = build(store, cuts=2)
    assert {s.meta["cut"] for s in whole} == {"2025-02-20T10:00:00"}
    # until 1 March: 8 engagements in the slice, cuts after the 3rd (too little history) and the 5th (t2, 10 Feb);
    # its 30-day window would reach t3 (1 March), which is after the slice, so there is no teapot tag sample
    before = build(store, cuts=2, until=datetime(2025, 3, 1))
    assert [s.task for s in before] == ["interest_mining", "tag_prediction"]
    assert {s.meta["cut"] for s in before} == {"2025-02-10T10:00:00"}
    assert orjson.loads(before[1].target)["tags"][0]["item_tag"] == "waterproof trekking boots"
    assert all("Cast Iron" not in s.target and "cast iron" not in s.target for s in before)
    # since 20 Feb: the slice holds x1, h4, t3, h5; one cut after h4 (25 Feb) with the whole history before it
    after = build(store, since=datetime(2025, 2, 20))
    assert [s.task for s in after] == ["interest_mining", "tag_prediction"]
    assert {s.meta["cut"] for s in after} == {"2025-02-25T10:00:00"}
    assert "Lumina Ceramic Teapot" in after[0].messages[-1]["content"]  # January history, before the slice
    assert orjson.loads(after[1].target)["tags"][0]["item_tag"] == "cast iron teapot"
    # a slice with room for no cut builds nothing; an empty or reversed slice is bad input
    assert build(store, since=datetime(2025, 4, 1)) == []
    with pytest.raises(BadInput, match="--since 2025-03-01 is not before --until 2025-03-01"):
        build(store, since=datetime(2025, 3, 1), until=datetime(2025, 3, 1))


def test_sample_store_dedupes_and_exports(store: Path, tmp_path: Path) -> None:
    samples = build(store)
    con = open_samples(tmp_path / "s.duckdb")
    assert save_samples(con, samples) == (3, 0)
    assert save_samples(con, samples) == (0, 3)  # content-addressed: a rebuild adds nothing
    con.close()
    loaded = load_samples(tmp_path / "s.duckdb", tasks=["tags"])
    assert [s.hash for s in loaded] == sorted(s.hash for s in samples if s.task == "tag_prediction")
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(orjson.dumps(s.to_json()) + b"\n" for s in samples))
    assert {s.hash for s in load_samples(path)} == {s.hash for s in samples}
    path.write_bytes(orjson.dumps(samples[0].to_json()) + b"\n" + b'{"task": "x"}\n')
    with pytest.raises(BadInput, match=r"s\.jsonl:2: not an alignment sample"):
        load_samples(path)


def test_reply_json_spacing_matches_grammar_output() -> None:
    assert reply_json({"tags": [{"a": "x", "b": 1}]}) == '{"tags": [{"a": "x", "b": 1}]}'


def test_cli_align_data_writes_store_and_jsonl(store: Path, tmp_path: Path) -> None:
    users = tmp_path / "bench-users.txt"
    users.write_text("u2\n")
    r = CliRunner().invoke(app, ["align", "data", "--db", str(store), "--samples", str(tmp_path / "s.duckdb"),
                                 "--exclude-users", str(users), "--cuts", "1", "--jsonl", str(tmp_path / "s.jsonl")])
    assert r.exit_code == 0, r.output
    got = load_samples(tmp_path / "s.duckdb")
    assert {s.task for s in got} == {"interest_mining", "tag_prediction"} and {s.user_id for s in got} == {"u1"}
    assert len(load_samples(tmp_path / "s.jsonl")) == len(got)
    r = CliRunner().invoke(app, ["align", "data", "--db", str(store), "--samples", str(tmp_path / "r.duckdb"),
                                 "--exclude-users", str(users), "--cuts", "1", "--interest-rank", "recency"])
    assert r.exit_code == 0, r.output
    assert {s.task for s in load_samples(tmp_path / "r.duckdb")} == {"interest_mining", "tag_prediction"}
    # the newest slice of the logs (incremental learning): only the cut on or after --since
    r = CliRunner().invoke(app, ["align", "data", "--db", str(store), "--samples", str(tmp_path / "il.duckdb"),
                                 "--exclude-users", str(users), "--since", "2025-02-20", "--cuts", "1"])
    assert r.exit_code == 0, r.output
    assert {s.meta["cut"] for s in load_samples(tmp_path / "il.duckdb")} == {"2025-02-25T10:00:00"}
    r = CliRunner().invoke(app, ["align", "data", "--db", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == 2 and "no such database" in r.output
    # a list that would exclude nobody (JSON lines, another dataset's ids, nothing) is bad input, not a no-op
    for text, expect in (('{"user_id": "u2"}\n', f"{users}:1: expected one bare user id a line"),
                         ("u2\nnobody\n", f"{users}: 1 user id(s) not in the --db: nobody"),
                         ("\n", f"{users}: file is empty")):
        users.write_text(text)
        r = CliRunner().invoke(app, ["align", "data", "--db", str(store), "--samples", str(tmp_path / "s2.duckdb"),
                                     "--exclude-users", str(users), "--cuts", "1"])
        assert r.exit_code == 2 and expect in r.output, r.output


def test_cli_align_bad_inputs_exit_2_with_file_and_line(store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = Sample("t", "logs", [{"role": "user", "content": "x"}], "{}").to_json()
    bad.write_bytes(orjson.dumps(good) + b"\n" + b'{"task": "t", "messages": "nope", "target": "{}"}\n')
    run = CliRunner().invoke
    r = run(app, ["align", "sft", "--samples", str(bad), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "bad.jsonl:2: not an alignment sample" in r.output
    r = run(app, ["align", "sft", "--samples", str(tmp_path / "none.duckdb")])
    assert r.exit_code == 2 and "no such sample file" in r.output
    r = run(app, ["align", "self-train", "--db", str(store), "--model", str(tmp_path)])
    assert r.exit_code == 2 and "not an aligned model dir" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--source", "web"])
    assert r.exit_code == 2 and "expected logs, teacher, curriculum or labels" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--task", "explanations"])
    assert r.exit_code == 2 and "logs build interests and tags" in r.output and "--source teacher" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--source", "teacher"])  # no server named
    assert r.exit_code == 2 and "needs --teacher-base-url" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--interest-rank", "latest"])
    assert r.exit_code == 2 and "--interest-rank latest: expected one of newest, count, recency" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--until", "March"])
    assert r.exit_code == 2 and "--until: 'March' is not a date" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--since", "2025-03-02", "--until", "2025-03-01"])
    assert r.exit_code == 2 and "--since 2025-03-02 is not before --until 2025-03-01" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--source", "curriculum", "--since", "2025-03-01"])
    assert r.exit_code == 2 and "slice the logs of --source logs and teacher" in r.output
    assert not (tmp_path / "m").exists()  # nothing was trained or written
