"""Issue 8: split-honest LLM inputs (no held-out title reaches a prompt), the refusal of leaked tags, and the intent
metrics against hand-computed cases."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recgpt_cli.catalogue import Catalogue
from recgpt_cli.compress import ItemInfo, SplitView, compress_users, default_reference_date, rule_based_phrase
from recgpt_cli.errors import BadInput
from recgpt_cli.importers import import_jsonl
from recgpt_cli.intent import reason_grounding, subset_metrics, tag_item_topk, tag_quality
from recgpt_cli.interests import InterestMiner
from recgpt_cli.llm.base import FakeBackend
from recgpt_cli.llm.structured import StructuredLLM
from recgpt_cli.metrics import exploration_share, set_prf
from recgpt_cli.retrieve import Tag
from recgpt_cli.splits import Interactions, SplitData, leak_reason, load_split, make_split
from recgpt_cli.store import open_db
from recgpt_cli.tags import TagPredictor
from recgpt_cli.text import unsupported_claims

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("intent") / "sample.duckdb"
    con = open_db(db)
    import_jsonl(con, users=SAMPLE / "users.jsonl", items=SAMPLE / "items.jsonl",
                 behaviors=SAMPLE / "behaviors.jsonl")
    make_split(con, "loo")
    con.close()
    return db


def loo_id(db: Path) -> str:
    """The stored loo split's id, which records made by `compress --split loo` carry."""
    con = open_db(db, read_only=True)
    try:
        return load_split(con, "loo").split_id
    finally:
        con.close()


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _responder(messages: list[dict[str, str]], schema: dict[str, Any] | None, params: Any) -> str:
    """Answers from what the prompt shows: the first main category as an interest, then one tag per call."""
    prompt = messages[-1]["content"]
    if schema and schema.get("title") == "InterestList":
        cats = re.search(r"Main Categories: (.*)", prompt)
        first = (cats.group(1).split(",")[0].strip() if cats else "") or "Gadgets"
        return json.dumps({"interests": [{"interest": first, "stage": "long-term",
                                          "reason": f"Viewed and bought several {first} items"}]})
    return json.dumps({"tags": [{"item_tag": "lightweight travel gear", "reason": "Fits the trips the user plans",
                                 "serves_interest": "I1"}]})


def _phrases(con: Any) -> dict[str, tuple[str, str]]:
    return {i: (t, rule_based_phrase(ItemInfo(i, t, tuple(p or ()), b))) for i, t, p, b in con.execute(
        "SELECT item_id, title, category_path, brand FROM items").fetchall()}


@pytest.mark.parametrize("phase", ["valid", "test"])
def test_no_held_out_title_reaches_a_prompt(sample_db: Path, phase: str) -> None:
    con = open_db(sample_db, read_only=True)
    split = load_split(con, "loo")
    users = split.user_ids[:40]
    phrases = _phrases(con)
    ref = default_reference_date(con)
    split_records = [u.to_record() for u in compress_users(con, date=ref, user_ids=users, token_counter=words,
                                                           view=SplitView("loo", phase))]
    leaky_records = [u.to_record() for u in compress_users(con, date=ref, user_ids=users, token_counter=words)]
    con.close()
    hidden_phases = ("valid", "test") if phase == "valid" else ("test",)

    def held_out(uid: str) -> set[str]:
        u = split.user_index[uid]
        return {split.item_ids[v] for p in hidden_phases
                for v in split.user_items(p)[1][split.user_items(p)[0][u]: split.user_items(p)[0][u + 1]]}

    def leaks(records: list[dict[str, Any]]) -> int:
        backend = FakeBackend(_responder)
        llm = StructuredLLM(backend, cache=None)
        miner = InterestMiner(llm, None, max_interests=2)
        predictor = TagPredictor(llm, None, n_tags=2)
        n = 0
        for rec in records:
            before = len(backend.calls)
            row, _ = miner(rec)
            predictor(row)
            prompts = "\n".join(m["content"] for call in backend.calls[before:] for m in call)
            u = split.user_index[rec["user_id"]]
            ip, items = split.exclude_for(phase)
            # a held-out item may share its phrase with an item the user may see: that is no leak
            visible = {phrases[split.item_ids[v]][1] for v in items[ip[u]: ip[u + 1]]}
            for item in held_out(rec["user_id"]):
                title, phrase = phrases[item]
                n += (title in prompts or phrase in prompts) and phrase not in visible
        return n

    assert leaks(leaky_records) > 0  # the check can fail: full histories do leak held-out items
    assert leaks(split_records) == 0
    assert all(r["split"] == "loo" and r["phase"] == phase and r["split_id"] == split.split_id
               for r in split_records)


def test_compress_refuses_a_split_older_than_the_behaviours(sample_db: Path, tmp_path: Path) -> None:
    """A behaviour imported after the split is in no phase: a history built on the stale split could hold an item
    that the rebuilt split holds out, so split-aware compression refuses until the split is rebuilt."""
    db = tmp_path / "copy.duckdb"
    db.write_bytes(sample_db.read_bytes())
    con = open_db(db)
    before = load_split(con, "loo").split_id
    con.execute("INSERT INTO behaviors SELECT * REPLACE ('i0003' AS item_id, ts + INTERVAL 1 DAY AS ts) "
                "FROM behaviors WHERE user_id = 'u001' AND item_id <> 'i0003' ORDER BY ts DESC LIMIT 1")
    with pytest.raises(BadInput, match="the stored loo split has .* interactions but the DB now has"):
        list(compress_users(con, date=default_reference_date(con), user_ids=["u001"], token_counter=words,
                            view=SplitView("loo", "test")))
    make_split(con, "loo", force=True)  # what `train-towers --new-split` does
    rec = next(iter(compress_users(con, date=default_reference_date(con), user_ids=["u001"], token_counter=words,
                                   view=SplitView("loo", "test")))).to_record()
    assert rec["split_id"] == load_split(con, "loo").split_id != before
    con.close()


def test_leak_reason_cases() -> None:
    assert leak_reason("loo", "test", "loo", "test") is None
    assert leak_reason("loo", "valid", "loo", "test") is None  # saw less than allowed
    assert leak_reason("loo", "valid", "loo", "valid") is None
    assert "valid items" in (leak_reason("loo", "test", "loo", "valid") or "")
    assert "full history" in (leak_reason(None, None, "loo", "test") or "")
    assert "recbole split" in (leak_reason("loo", "test", "recbole", "test") or "")
    assert "marked phase 'train'" in (leak_reason("loo", "train", "loo", "test") or "")  # no compress writes it
    # a history cut for another version of the split (rebuilt with another seed, or after an import)
    assert leak_reason("loo", "test", "loo", "test", split_id="a", current_id="a") is None
    assert "another version" in (leak_reason("loo", "test", "loo", "test", split_id="a", current_id="b") or "")
    assert "without the split's id" in (leak_reason("loo", "test", "loo", "test", current_id="b") or "")


def test_evaluate_refuses_tags_from_a_full_history(sample_db: Path, tmp_path: Path) -> None:
    from recgpt_cli.cli import app

    tags = tmp_path / "tags.jsonl"
    tags.write_text(json.dumps({"user_id": "u001", "split": "loo", "phase": "test", "split_id": loo_id(sample_db),
                                "interests": [], "tags": [{"tag": "hiking boots", "interest": "I1"}]}) + "\n"
                    + json.dumps({"user_id": "u002", "interests": [], "tags": [{"tag": "board games"}]}) + "\n")
    db = tmp_path / "copy.duckdb"
    db.write_bytes(sample_db.read_bytes())
    res = CliRunner().invoke(app, ["evaluate", "--db", str(db), "--baseline", "pop", "--protocol", "loo",
                                   "--tags", str(tags), "--json"])
    assert res.exit_code == 2, res.output
    assert f"{tags}:2:" in res.output and "full history" in res.output and "Traceback" not in res.output
    # the same file scored on valid is refused at line 1 already (made for test, which saw the valid items)
    res = CliRunner().invoke(app, ["evaluate", "--db", str(db), "--baseline", "pop", "--protocol", "loo",
                                   "--phase", "valid", "--tags", str(tags), "--json"])
    assert res.exit_code == 2 and f"{tags}:1:" in res.output
    # another stage's file given as --tags is named as such, not taken for leaked tags
    recs = tmp_path / "recs.jsonl"
    recs.write_text(json.dumps({"kind": "recommendation", "user_id": "u001", "item_id": "i0001", "rank": 1}) + "\n")
    res = CliRunner().invoke(app, ["evaluate", "--db", str(db), "--baseline", "pop", "--protocol", "loo",
                                   "--tags", str(recs), "--json"])
    assert res.exit_code == 2 and f"{recs}:1: expected recgpt mine-interests output" in res.output, res.output
    res = CliRunner().invoke(app, ["evaluate", "--db", str(db), "--baseline", "pop", "--truth", str(tags)])
    assert res.exit_code == 2 and "--truth scores the interests of --tags" in res.output


def test_read_recs_refuses_tag_rows_without_provenance(sample_db: Path, tmp_path: Path) -> None:
    from recgpt_cli.evaluate import read_recs

    con = open_db(sample_db, read_only=True)
    split = load_split(con, "loo")
    con.close()
    recs = tmp_path / "recs.jsonl"
    recs.write_text(json.dumps({"user_id": "u001", "item_id": "i0001", "rank": 1, "tag": None}) + "\n"
                    + json.dumps({"user_id": "u001", "item_id": "i0002", "rank": 2, "tag": "pans"}) + "\n")
    with pytest.raises(BadInput, match=r"recs.jsonl:2:.*full history"):
        read_recs(recs, split, 10)
    row = {"user_id": "u001", "item_id": "i0002", "rank": 1, "tag": "pans", "split": "loo", "phase": "test"}
    recs.write_text(json.dumps(row) + "\n")
    with pytest.raises(BadInput, match=r"recs.jsonl:1:.*without the split's id"):  # an older recgpt's file
        read_recs(recs, split, 10)
    recs.write_text(json.dumps({**row, "split_id": "0" * 16}) + "\n")
    with pytest.raises(BadInput, match=r"recs.jsonl:1: made by a model trained on another version of the split"):
        read_recs(recs, split, 10)
    recs.write_text(json.dumps({**row, "split_id": split.split_id, "exclude": "all"}) + "\n")
    with pytest.raises(BadInput, match=r"recs.jsonl:1: a serving list"):
        read_recs(recs, split, 10)
    recs.write_text(json.dumps({**row, "split_id": split.split_id}) + "\n")
    topk, counts = read_recs(recs, split, 10)
    assert counts["rows"] == 1 and topk[split.user_index["u001"], 0] == split.item_index["i0002"]


# ---- metrics, hand-computed ----


def test_set_prf_macro_over_truth_users() -> None:
    m = set_prf({"a": {"x", "y"}, "b": set(), "z": {"q"}}, {"a": {"x", "w"}, "b": {"q"}, "c": set()})
    # a: p = r = f = 1/2; b: no prediction -> 0; c: empty truth, not counted; z: not in truth
    assert m == {"precision": 0.25, "recall": 0.25, "f1": 0.25, "users": 2}


def test_exploration_share_counts_categories_outside_the_visible_history() -> None:
    cats = np.array([0, 0, 1, 2, -1])
    hist = (np.array([0, 1, 3]), np.array([0, 2, 3]))  # user 0 saw item 0 (cat 0); user 1 saw cats 1, 2
    topk = np.array([[1, 2, 3], [2, 4, -1]])
    out = exploration_share(topk, cats, hist, np.array([0, 1]), k=3)
    # user 0: cats 0, 1, 2 vs seen {0} -> 2/3; user 1: item 2 (cat 1, seen), item 4 (unknown = new) -> 1/2
    assert out.tolist() == pytest.approx([2 / 3, 1 / 2])


def test_tag_quality_rates() -> None:
    cat = Catalogue.from_items([("Trailpeak Waterproof Hiking Boots", ["Sports", "Hiking Boots"], "Trailpeak"),
                                ("Velvet Bloom Eau de Parfum", ["Beauty", "Perfume"], "Velvet")])
    recs = [{"tags": [{"tag": "waterproof hiking boots", "reason": "User hikes every weekend in the hills"},
                      {"tag": "puzzle food", "reason": "..."}], "tag_rules_removed": {"vague": 2, "stale": 0}},
            {"tags": [{"tag": "eau de parfum", "reason": "eau de parfum"}], "tag_rules_removed": {"vague": 1}}]
    q = tag_quality(recs, cat)
    assert q["tags_kept"] == 3 and q["tags_removed"] == 3 and q["kept_share"] == 0.5
    assert q["valid_share"] == pytest.approx(2 / 3)  # "puzzle food" matches no item
    assert q["bad_reason_share"] == pytest.approx(2 / 3)  # "..." and a copy of the tag


HISTORY = ("2025-04-17(detail_view) | Trailpeak Leather Trail Shoes (Hiking Boots), Apex Camping Tent (Camping Tents)\n"
           "2024..2025-03(categories) | Perfume x5, Hiking Boots x2")


def test_a_reason_is_grounded_when_the_history_holds_what_it_says() -> None:
    # what the aligned model wrote before its targets were grounded: counts the history does not show
    assert unsupported_claims("10 hiking boots items over 3 months, lately leather trail shoes", HISTORY,
                              "hiking boots") == ["10", "3"]
    # the grounded shape: items the history names, and the summary line's count
    assert unsupported_claims("lately leather trail shoes, and 2 more earlier", HISTORY, "hiking boots") == []
    assert unsupported_claims("5 perfume items earlier", HISTORY, "perfume") == []
    # a day of a date is not a count ("17" only appears in 2025-04-17); a product the history lacks is a claim
    assert unsupported_claims("17 pairs of hiking boots", HISTORY) == ["pair", "17"]
    assert unsupported_claims("after waterproof jacket in your hiking boots history", HISTORY,
                              "trail shoes hiking boots") == ["jacket", "waterproof"]


def test_reason_grounding_shares() -> None:
    rec = {"compressed": HISTORY,
           "interests": [{"interest": "hiking boots", "reason": "lately leather trail shoes"},
                         {"interest": "perfume", "reason": "12 perfume items over 2 months"}],
           "tags": [{"tag": "mid hiking boots", "interest": "hiking boots",
                     "reason": "after leather trail shoes in your hiking boots history"}]}
    assert reason_grounding([rec]) == {"interest_reason_grounded": 0.5, "tag_reason_grounded": 1.0}
    # records without their history cannot be checked: undefined, not 0 or 1
    got = reason_grounding([{k: v for k, v in rec.items() if k != "compressed"}])
    assert all(v != v for v in got.values())


def _tiny_split() -> SplitData:
    def inter(users: list[int], items: list[int]) -> Interactions:
        return Interactions(np.array(users, dtype=np.int64), np.array(items, dtype=np.int64),
                            np.zeros(len(users), dtype="datetime64[us]"))

    return SplitData("loo", ["u0", "u1"], ["a", "b", "c", "d"], {"u0": 0, "u1": 1}, {"a": 0, "b": 1, "c": 2, "d": 3},
                     train=inter([0, 1], [0, 1]), valid=inter([], []), test=inter([0, 1], [2, 3]))


class _TagModel:
    """Items on axes: a, b, c, d = e0..e3; a tag's vector is the axis its first letter names."""

    def item_vectors(self) -> torch.Tensor:
        return torch.eye(4)

    def tag_vectors(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([torch.eye(4)["abcd".index(t[0])] + 0.1 * torch.ones(4) for t in texts])


def test_tag_item_topk_uses_tags_alone_and_masks_history() -> None:
    split = _tiny_split()
    tags = {0: [Tag("c tag"), Tag("a tag")], 1: []}
    topk = tag_item_topk(_TagModel(), split, tags, np.array([0, 1]), "test", k=2)  # type: ignore[arg-type]
    # user 0: tag "c" -> c first; tag "a" -> a is train (masked) -> its best other item; quota 1 each
    assert topk[0, 0] == 2 and topk[0, 1] in (1, 3)
    assert topk[1].tolist() == [-1, -1]  # no tags: no list, no user-only top-up
    m = subset_metrics(topk, np.array([0, 1]), split, "test", (2,))
    assert m["hit@2"] == 0.5 and m["n_users"] == 2


def test_evaluate_cli_reports_intent_metrics(sample_db: Path, tmp_path: Path) -> None:
    from recgpt_cli.cli import app

    truth = {json.loads(line)["user_id"]: json.loads(line)["interests"]
             for line in (SAMPLE / "truth_interests.jsonl").read_text().splitlines() if line.strip()}
    # u001's true interests as its own interests and tags: interest P = R = 1 through phi
    recs = [{"user_id": "u001", "split": "loo", "phase": "test", "split_id": loo_id(sample_db),
             "interests": [{"interest_id": f"I{i}", "interest": leaf} for i, leaf in enumerate(truth["u001"], 1)],
             "tags": [{"tag": leaf, "interest": "I1", "reason": "..."} for leaf in truth["u001"]],
             "tag_rules_removed": {"vague": len(truth["u001"])}, "compressed": "2025-06(cart) | Ridge Tent (Tents)"}]
    tags = tmp_path / "tags.jsonl"
    tags.write_text("".join(json.dumps(r) + "\n" for r in recs))
    db = tmp_path / "copy.duckdb"
    db.write_bytes(sample_db.read_bytes())
    res = CliRunner().invoke(app, ["evaluate", "--db", str(db), "--baseline", "pop", "--protocol", "loo", "--tags",
                                   str(tags), "--truth", str(SAMPLE / "truth_interests.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    from recgpt_cli.tag_category import fit_tag_category

    con = open_db(db, read_only=True)
    mapped = set(fit_tag_category(con, holdout=0.0)[0].predict_leaf(truth["u001"]))  # phi of the leaf names
    con.close()
    hit = len(mapped & set(truth["u001"]))
    assert m["interest_precision"] == pytest.approx(hit / len(mapped)) and m["interest_users"] == 1
    assert m["interest_recall"] == pytest.approx(hit / len(truth["u001"])) and hit >= 3
    assert m["tag_kept_share"] == 0.5 and m["tag_bad_reason_share"] == 1.0
    # "..." claims nothing; the interests give no reason to check (undefined: null)
    assert m["tag_reason_grounded"] == 1.0 and m["interest_reason_grounded"] is None
    assert 0.0 <= m["exploration@10"] <= 1.0 and m["hr_tagcategory@30_users"] == 1


def test_truth_file_is_checked_against_the_store(sample_db: Path, tmp_path: Path) -> None:
    """Ground truth for another dataset (unknown users or categories), a string where the list goes (it was split
    into characters) or a user given twice (the last won) is `file:line` bad input, never silently used."""
    from recgpt_cli.intent import load_truth

    con = open_db(sample_db, read_only=True)
    try:
        good = [json.loads(x) for x in (SAMPLE / "truth_interests.jsonl").read_text().splitlines()[:2]]
        path = tmp_path / "truth.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in good))
        assert load_truth(path, con) == {r["user_id"]: set(r["interests"]) for r in good}
        leaf = good[0]["interests"][0]
        for bad, match in (({"user_id": good[1]["user_id"], "interests": leaf}, ":2: interests must be a list"),
                           ({"user_id": "zz1", "interests": [leaf]}, ":2: unknown user_id 'zz1'"),
                           ({"user_id": good[1]["user_id"], "interests": ["Not A Leaf"]}, ":2: unknown categories"),
                           (good[0], ":2: duplicate user_id")):
            path.write_text(json.dumps(good[0]) + "\n" + json.dumps(bad) + "\n")
            with pytest.raises(BadInput, match=match):
                load_truth(path, con)
    finally:
        con.close()
