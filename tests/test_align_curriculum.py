"""recgpt_cli.align.curriculum: Appendix C's curriculum samples on a hand-written store with searches — exact
expected samples per subtask, split honesty (nothing after a user's train period, excluded users contribute
nothing), balancing, the stage order file, and the `align data --source curriculum` / `align sft --curriculum` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from recgpt_cli.align import curriculum as cur
from recgpt_cli.align import sft as align_sft
from recgpt_cli.align.curriculum import CurriculumConfig, build_curriculum, load_order, resolve_tasks
from recgpt_cli.align.samples import Sample, load_samples
from recgpt_cli.cli import app
from recgpt_cli.errors import BadInput
from recgpt_cli.splits import make_split
from recgpt_cli.store import open_db

# (item, title, category path, brand)
ITEMS = [
    ("b1", "Trailpeak Waterproof Hiking Boots", ["Outdoor", "Footwear", "Hiking Boots"], "Trailpeak"),
    ("b2", "Summit Leather Hiking Boots, Size 42", ["Outdoor", "Footwear", "Hiking Boots"], "Summit"),
    ("b3", "Ridge Trekking Boots", ["Outdoor", "Footwear", "Hiking Boots"], "Ridge"),
    ("s1", "Alpine Trail Socks", ["Outdoor", "Footwear", "Hiking Socks"], None),
    ("t1", "Lumina Ceramic Teapot, 1L", ["Home", "Kitchen", "Teapots"], "Lumina"),
    ("t2", "Glass Teapot with Infuser", ["Home", "Kitchen", "Teapots"], None),
    ("k1", "Steel Kitchen Timer", ["Home", "Kitchen", "Kitchen Timers"], None),
    ("v1", "Velvet Valid Teapot", ["Home", "Kitchen", "Teapots"], None),
    ("z1", "Zephyr Test Boots", ["Outdoor", "Footwear", "Hiking Boots"], None),
]
# (user, item or None, query or None, type, time). Leave-one-out: u1's valid is v1, its test z1; u3's t2 and b3.
BEHAVIORS = [
    ("u1", None, "Waterproof  Boots", "search", "2025-01-05 10:00"),
    ("u1", "b1", None, "click", "2025-01-05 10:05"),
    ("u1", "b1", None, "detail_view", "2025-01-05 10:07"),
    ("u1", "b2", None, "click", "2025-01-05 10:10"),  # b1 has more events: b1 is the session's main item
    ("u1", None, "ceramic teapot", "search", "2025-01-06 10:00"),
    ("u1", "t1", None, "click", "2025-01-06 10:02"),
    ("u1", None, "hiking boots", "search", "2025-01-07 10:00"),
    ("u1", "b2", None, "click", "2025-01-07 12:00"),  # two hours later: not part of that search's session
    ("u1", None, "leather boots", "search", "2025-01-08 10:00"),
    ("u1", "b3", None, "click", "2025-01-08 10:01"),
    ("u1", None, "teapot", "search", "2025-01-08 10:03"),  # the next search ends the previous session
    ("u1", "t2", None, "click", "2025-01-08 10:05"),
    ("u1", "v1", None, "click", "2025-02-01 10:00"),  # valid
    ("u1", None, "test boots", "search", "2025-03-01 10:00"),
    ("u1", "z1", None, "click", "2025-03-01 10:01"),  # test: after the train period, never a sample
    ("u2", None, "waterproof boots", "search", "2025-01-05 09:00"),  # u2 is excluded (a benchmark scores it)
    ("u2", "s1", None, "click", "2025-01-05 09:01"),
    ("u2", "t1", None, "click", "2025-01-09 09:00"),
    ("u2", "t2", None, "click", "2025-01-10 09:00"),
    ("u2", "b1", None, "click", "2025-01-11 09:00"),
    ("u3", None, "waterproof boots", "search", "2025-01-05 10:00"),
    ("u3", "b2", None, "click", "2025-01-05 10:01"),
    ("u3", "t1", None, "click", "2025-01-10 10:00"),
    ("u3", "t2", None, "click", "2025-01-11 10:00"),
    ("u3", "b3", None, "click", "2025-01-12 10:00"),
]


def make_store(path: Path) -> Path:
    con = open_db(path)
    con.executemany("INSERT INTO users VALUES (?, ?)",
                    [("u1", '{"age": 41, "gender": "female"}'), ("u2", "{}"), ("u3", "{}")])
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL, NULL, '{}')",
                    [(i, t, p, p[-1], b) for i, t, p, b in ITEMS])
    con.executemany("INSERT INTO behaviors VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP), NULL)", BEHAVIORS)
    make_split(con, "loo")
    con.close()
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "c.duckdb")


def build(store: Path, tasks: list[str], **kw: Any) -> tuple[list[Sample], dict[str, dict[str, int]]]:
    con = open_db(store, read_only=True)
    try:
        return build_curriculum(con, tasks, CurriculumConfig(**kw), exclude=["u2"])
    finally:
        con.close()


def pairs(samples: list[Sample], task: str) -> list[tuple[str, dict[str, Any]]]:
    """(the user message's first line(s) after the role text, the reply) of each sample of `task`."""
    return [(s.messages[-1]["content"].split("\n\nJSON only")[0], json.loads(s.target))
            for s in samples if s.task == task]


def test_query_category_majority_leaf_of_sessions_in_the_train_period(store: Path) -> None:
    samples, counts = build(store, ["query_category"])
    got = {p[0]: p[1] for p in pairs(samples, "query_category")}
    # u2's sock session is excluded; "hiking boots" had no engagement within the hour; "test boots" is test time
    assert got == {"Search Query: ceramic teapot": {"category": "Teapots"},
                   "Search Query: teapot": {"category": "Teapots"},
                   "Search Query: leather boots": {"category": "Hiking Boots"},
                   "Search Query: waterproof boots": {"category": "Hiking Boots"}}
    wb = next(s for s in samples if "waterproof boots" in s.messages[-1]["content"])
    assert wb.meta == {"sessions": 2, "agreement": 1.0} and wb.source == "curriculum" and wb.user_id is None
    assert counts == {"query_category": {"built": 4, "kept": 4}}


def test_query_item_relevance_pairs_a_positive_with_a_hard_negative(store: Path) -> None:
    samples, _ = build(store, ["query_item_relevance"])
    got = {(s.meta["query"], s.meta["item_id"]): json.loads(s.target)["relevant"] for s in samples}
    # negatives come from another leaf of the same department (Hiking Socks for boots, Kitchen Timers for teapots)
    assert got == {("ceramic teapot", "t1"): "Yes", ("ceramic teapot", "k1"): "No",
                   ("teapot", "t2"): "Yes", ("teapot", "k1"): "No",
                   ("leather boots", "b3"): "Yes", ("leather boots", "s1"): "No",
                   ("waterproof boots", "b1"): "Yes", ("waterproof boots", "s1"): "No"}
    one = next(s for s in samples if s.meta["item_id"] == "s1")
    assert "Item: Alpine Trail Socks (Outdoor > Footwear > Hiking Socks)" in one.messages[-1]["content"]
    assert one.meta["hard_negative"] is True


def test_title_key_info_from_the_catalogue(store: Path) -> None:
    samples, _ = build(store, ["title_key_info"])
    got = dict(pairs(samples, "title_key_info"))
    assert got["Item Title: Summit Leather Hiking Boots, Size 42"] == {
        "brand": "Summit", "product": "leather hiking boots", "category": "Hiking Boots"}
    assert got["Item Title: Glass Teapot with Infuser"] == {
        "brand": "none", "product": "glass teapot with infuser", "category": "Teapots"}
    assert len(got) == len(ITEMS)


def test_what_to_buy_and_rewriting_per_session_with_purification(store: Path) -> None:
    samples, counts = build(store, ["what_to_buy", "query_rewriting"])
    wtb = sorted((s.user_id, s.messages[-1]["content"].split("\n")[1], json.loads(s.target)["domain"])
                 for s in samples if s.task == "what_to_buy")
    assert wtb == [("u1", "Search Query: ceramic teapot", "Home > Kitchen"),
                   ("u1", "Search Query: leather boots", "Outdoor > Footwear"),
                   ("u1", "Search Query: teapot", "Home > Kitchen"),
                   ("u1", "Search Query: waterproof boots", "Outdoor > Footwear"),
                   ("u3", "Search Query: waterproof boots", "Outdoor > Footwear")]
    first = next(s for s in samples if s.task == "what_to_buy" and s.user_id == "u1")
    assert first.messages[-1]["content"].startswith("User Attributes: age: 41, gender: female")
    rw = sorted((s.user_id, p[0], p[1]["rewrite"]) for s, p in
                zip([s for s in samples if s.task == "query_rewriting"], pairs(samples, "query_rewriting"),
                    strict=True))
    # "ceramic teapot" -> "ceramic teapot" is no rewrite, so it is dropped
    assert rw == [("u1", "Search Query: leather boots", "trekking boots"),
                  ("u1", "Search Query: teapot", "glass teapot with infuser"),
                  ("u1", "Search Query: waterproof boots", "waterproof hiking boots"),
                  ("u3", "Search Query: waterproof boots", "leather hiking boots")]
    assert counts["query_rewriting"] == {"built": 4, "kept": 4}


def test_inductive_reasoning_from_train_items_only(store: Path) -> None:
    samples, _ = build(store, ["inductive_reasoning"])
    assert [(s.user_id, json.loads(s.target)) for s in samples] == [
        ("u1", {"interest": "hiking boots", "domain": "Outdoor > Footwear"})]
    text = samples[0].messages[-1]["content"]
    assert all(t in text for t in ("Trailpeak Waterproof", "Summit Leather", "Ridge Trekking"))
    assert "Zephyr" not in text  # u1's test item


def test_no_sample_sees_valid_test_or_excluded_users(store: Path) -> None:
    samples, _ = build(store, ["curriculum"])
    assert {s.task for s in samples} == set(cur.CURRICULUM_TASKS)
    for s in samples:
        if s.task == "title_key_info":
            continue  # catalogue facts, the same in every phase
        text = json.dumps(s.messages) + s.target + json.dumps(s.meta)
        assert "Velvet" not in text and "Zephyr" not in text and "test boots" not in text, s.task
        assert "v1" not in s.meta.get("items", []) and s.meta.get("item_id") not in ("v1", "z1")
        assert s.user_id in (None, "u1", "u3")
    for s in samples:  # every reply decodes with the task's output model, as the served schema would
        cur.OUTPUTS[s.task].model_validate_json(s.target)


def test_balancing_caps_per_task_and_category(store: Path) -> None:
    samples, counts = build(store, ["query_category", "query_item_relevance"], max_per_category=1)
    cats = [s.category for s in samples if s.task == "query_category"]
    assert sorted(cats) == ["Hiking Boots", "Teapots"]
    rel = [s for s in samples if s.task == "query_item_relevance"]
    assert len(rel) == 4 and len({s.meta["query"] for s in rel}) == 2  # pairs stay whole
    assert counts["query_category"] == {"built": 4, "kept": 2}
    again, _ = build(store, ["query_category", "query_item_relevance"], max_per_category=1)
    assert [s.hash for s in again] == [s.hash for s in samples]  # stable


def test_task_names_and_order_file(tmp_path: Path) -> None:
    assert resolve_tasks(["advanced", "foundation"]) == ["query_category", "query_item_relevance", "title_key_info",
                                                         "inductive_reasoning"]
    with pytest.raises(BadInput, match="--task shopping"):
        resolve_tasks(["shopping"])
    stages = load_order("appendix-c")
    assert [s.name for s in stages] == ["foundation", "intermediate", "advanced", "target"]
    assert {t for s in stages[:3] for t in s.tasks} == set(cur.CURRICULUM_TASKS)
    assert stages[-1].tasks == ("interest_mining", "tag_prediction")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stage]]\nname = "a"\ntasks = ["x"]\n[[stage]]\ntasks = ["x"]\n')
    with pytest.raises(BadInput, match="a task in two stages: x"):
        load_order(bad)
    bad.write_text('[[stage]]\nname = "a"\n')
    with pytest.raises(BadInput, match="non-empty `tasks`"):
        load_order(bad)
    with pytest.raises(BadInput, match="no such curriculum"):
        load_order("nope")


def test_cli_curriculum_data_and_sft_order(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = tmp_path / "bench-users.txt"
    users.write_text("u2\n")
    run = CliRunner().invoke
    r = run(app, ["align", "data", "--db", str(store), "--source", "curriculum", "--task", "foundation",
                  "--exclude-users", str(users), "--samples", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 0, r.output
    assert "curriculum query_category: 4 built, 4 kept" in r.output
    got = load_samples(tmp_path / "s.duckdb")
    assert {s.task for s in got} == {"query_category", "query_item_relevance", "title_key_info"}
    r = run(app, ["align", "data", "--db", str(store), "--source", "curriculum", "--task", "shopping",
                  "--samples", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 2 and "--task shopping" in r.output
    r = run(app, ["align", "data", "--db", str(store), "--source", "curriculum", "--max-users", "3"])
    assert r.exit_code == 2 and "--max-per-category" in r.output
    seen: dict[str, Any] = {}

    def fake_train(data: list[Sample], out: Path, cfg: align_sft.SFTConfig, **kw: Any) -> Any:
        seen["stages"], seen["tasks"] = cfg.stages, {s.task for s in data}
        raise BadInput("stop here")

    monkeypatch.setattr(align_sft, "train_sft", fake_train)
    r = run(app, ["align", "sft", "--samples", str(tmp_path / "s.duckdb"), "--curriculum", "appendix-c",
                  "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "stop here" in r.output
    assert seen["stages"][0] == ["query_category", "query_item_relevance", "title_key_info"]
    assert len(seen["stages"]) == 4 and seen["tasks"] == {"query_category", "query_item_relevance", "title_key_info"}
    r = run(app, ["align", "sft", "--samples", str(tmp_path / "s.duckdb"), "--curriculum", "appendix-c",
                  "--stages", "a;b"])
    assert r.exit_code == 2 and "use one" in r.output
