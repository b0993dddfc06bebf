"""Tag-aware retrieval (§2.3.3): fusion, quotas, engaged-item filtering, hnsw vs exact, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from towers_fixtures import make_shop_db
from typer.testing import CliRunner

from recgpt_cli.cli import app
from recgpt_cli.errors import BadInput
from recgpt_cli.retrieve import Hit, Tag, check_tags_split, merge_with_quota, read_tags, retrieve
from recgpt_cli.splits import load_split
from recgpt_cli.towers import TowerConfig, load_model, score_all, train_towers


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: avoid OpenMP spin-waiting on a shared box
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shop(one_thread, tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("shop")
    con = make_shop_db(d / "shop.duckdb")
    train_towers(con, d / "m", TowerConfig(epochs=2, dim=8, batch_size=32, n_negatives=8, device="cpu"))
    yield con, load_model(d / "m"), d
    con.close()


def test_merge_with_quota_exact():
    a = [Hit(1, 0.9, "a", "I1"), Hit(2, 0.8, "a", "I1"), Hit(3, 0.7, "a", "I1")]
    b = [Hit(2, 0.85, "b", "I2"), Hit(4, 0.5, "b", "I2")]
    fill = [Hit(9, 0.1, None, None), Hit(1, 0.1, None, None)]
    got = merge_with_quota([a, b], k=4, quota=2, fill=fill)
    assert [(h.item, h.tag) for h in got] == [(1, "a"), (2, "b"), (2, "a")][:2] + [(3, "a"), (4, "b")]
    # tag "a" may not take more than its quota even though its scores are higher; fill tops up
    got = merge_with_quota([a], k=3, quota=1, fill=fill)
    assert [(h.item, h.tag) for h in got] == [(1, "a"), (9, None)]


def test_merge_without_quota_shares_every_prefix_so_a_longer_list_starts_with_the_shorter():
    a = [Hit(i, 10.0 - i, "a", "I1") for i in range(1, 7)]  # scores 9..4: every "a" item outranks every "b" one
    b = [Hit(10 + i, 3.0 - i / 10, "b", "I2") for i in range(6)]
    got = merge_with_quota([a, b], k=4, quota=None, fill=[])
    # the n-th item comes from a tag holding fewer than ceil(n / 2) of the first n - 1: a, b, a, b
    assert [(h.item, h.tag) for h in got] == [(1, "a"), (10, "b"), (2, "a"), (11, "b")]
    # a fixed quota ceil(k / tags) = 5 at k = 10 lets "a" take the first five: its top 4 is not the 4-item list
    assert [h.tag for h in merge_with_quota([a, b], k=10, quota=5, fill=[])][:4] == ["a"] * 4
    for n in range(1, 12):
        assert merge_with_quota([a, b], k=n, quota=None, fill=[]) == merge_with_quota([a, b], k=12, quota=None,
                                                                                       fill=[])[:n]
    # exhausted lists leave the rest to the fill, no duplicates
    got = merge_with_quota([a[:1], b[:1]], k=4, quota=None, fill=[Hit(1, 0.1, None, None), Hit(7, 0.1, None, None)])
    assert [h.item for h in got] == [1, 10, 7]


def test_beta_one_is_user_only_ranking_and_filters_train(shop):
    con, model, _ = shop
    recs = list(retrieve(con, model, {"u00": [Tag("coffee", "I1")]}, beta=1.0, k=5, exact=True))
    split = load_split(con, "recbole")
    scores = score_all(model, split)
    indptr, items = split.user_items("train")
    for uid in ("u00", "u05"):
        u = split.user_index[uid]
        s = scores[u].clone()
        s[torch.as_tensor(items[indptr[u] : indptr[u + 1]])] = -torch.inf
        want = [split.item_ids[i] for i in s.topk(5).indices.tolist()]
        got = [r["item_id"] for r in recs if r["user_id"] == uid]
        assert got == want
        assert not set(got) & {split.item_ids[i] for i in items[indptr[u] : indptr[u + 1]]}
    assert all(r["tag"] is None for r in recs)
    assert {r["rank"] for r in recs} == {1, 2, 3, 4, 5}


def test_tags_fuse_with_quota_and_interest(shop):
    con, model, _ = shop
    tags = {"u00": [Tag("coffee", "I1"), Tag("tents", "I2")]}
    recs = [r for r in retrieve(con, model, tags, beta=0.3, k=6, per_tag_quota=2, exact=True) if r["user_id"] == "u00"]
    assert len(recs) == 6 and len({r["item_id"] for r in recs}) == 6
    by_tag = {t: sum(r["tag"] == t for r in recs) for t in ("coffee", "tents")}
    assert by_tag == {"coffee": 2, "tents": 2}  # quota reached by both, the rest from the user tower
    assert {r["interest"] for r in recs if r["tag"] == "coffee"} == {"I1"}
    assert sum(r["tag"] is None for r in recs) == 2


def test_a_longer_retrieve_list_starts_with_the_shorter_one(shop):
    # evaluate scores the top 10 of `retrieve --k 50`: it must be the list that `--k 10` gives
    con, model, _ = shop
    tags = {"u00": [Tag("coffee", "I1"), Tag("tents", "I2"), Tag("tea", "I1")]}
    short, long = ([(r["item_id"], r["tag"]) for r in retrieve(con, model, tags, beta=0.5, k=k, exact=True)
                    if r["user_id"] == "u00"] for k in (4, 12))
    assert len(short) == 4 and long[:4] == short
    assert len({t for _, t in short[:3]}) == 3  # the first three items: one per tag


def test_hnsw_agrees_with_exact(shop):
    con, model, d = shop
    exact = [(r["user_id"], r["item_id"]) for r in retrieve(con, model, None, beta=1.0, k=10, exact=True)]
    approx = [(r["user_id"], r["item_id"]) for r in retrieve(con, model, None, beta=1.0, k=10, ef=100)]
    assert len(set(exact) & set(approx)) / len(exact) >= 0.99
    assert list(d.joinpath("m").glob("hnsw-*.bin"))  # index cached in the model dir
    again = [(r["user_id"], r["item_id"]) for r in retrieve(con, model, None, beta=1.0, k=10, ef=100)]
    assert again == approx


def test_read_tags_errors(tmp_path: Path):
    good = tmp_path / "tags.jsonl"
    rec = {"kind": "tags", "compressed": "", "interests": []}
    good.write_text(orjson.dumps({**rec, "user_id": "u1", "tags": [{"tag": "tent", "interest_id": "I1"}]}).decode()
                    + "\n" + orjson.dumps({**rec, "user_id": "u2", "tags": []}).decode() + "\n")
    tags, empty = read_tags(good)
    assert tags == {"u1": [Tag("tent", None, "I1")], "u2": []} and empty == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "u1", "tags": "tent"}\n')
    with pytest.raises(BadInput, match="bad.jsonl:1"):
        read_tags(bad)


def cli_shop(tmp_path: Path, *train: str, users: tuple[str, ...] = ("u01",)) -> tuple[CliRunner, str, str, Path]:
    """A shop DB, a tower trained by the CLI (`train` = extra options) and a tags file for `users`."""
    make_shop_db(tmp_path / "shop.duckdb").close()
    runner = CliRunner()
    db, model = str(tmp_path / "shop.duckdb"), str(tmp_path / "m")
    res = runner.invoke(app, ["train-towers", "--db", db, "--out-dir", model, "--epochs", "1", "--dim", "8",
                              "--batch-size", "32", "--negatives", "8", "--device", "cpu", "--quiet", *train])
    assert res.exit_code == 0, res.output
    tags = tmp_path / "tags.jsonl"
    tags.write_text("".join(orjson.dumps({"kind": "tags", "user_id": u, "compressed": "", "interests": [],
                                          "tags": [{"tag": "tents", "interest_id": "I1"}]}).decode() + "\n"
                            for u in users))
    return runner, db, model, tags


def test_cli_train_then_retrieve(tmp_path: Path):
    runner, db, model, tags = cli_shop(tmp_path, users=("u01", "stranger"))
    out = tmp_path / "recs.jsonl"
    res = runner.invoke(app, ["retrieve", "--db", db, "--model", model, "--tags", str(tags), "--k", "3",
                              "--beta", "0.9", "--out", str(out)])
    assert res.exit_code == 0, res.output
    # a tag user the model cannot serve is counted and kept aside, not dropped
    assert "1 tag users unknown to the model" in res.output
    rejected = [orjson.loads(x) for x in (tmp_path / "recs.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["raw"]) for r in rejected] == [(2, "stranger")]
    recs = [orjson.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 24 * 3
    assert set(recs[0]) == {"kind", "kind_version", "user_id", "item_id", "rank", "score", "tag", "interest_id",
                            "interest", "split_id"}  # the version of the split the model trained on
    assert {r["tag"] for r in recs if r["user_id"] == "u01"} == {"tents"}
    res = runner.invoke(app, ["retrieve", "--db", db, "--model", model, "--beta", "2"])
    assert res.exit_code == 2 and "beta" in res.output
    res = runner.invoke(app, ["retrieve", "--db", db, "--model", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a trained tower model" in res.output
    assert np.isfinite([r["score"] for r in recs]).all()


def test_tags_on_a_tower_whose_tag_tower_never_trained_are_refused(tmp_path: Path):
    runner, db, model, tags = cli_shop(tmp_path, "--tag-weight", "0")
    res = runner.invoke(app, ["retrieve", "--db", db, "--model", model, "--tags", str(tags), "--beta", "0.7"])
    assert res.exit_code == 2 and "tag tower was never trained" in res.output and "Traceback" not in res.output
    # the user tower alone (beta 1) is what such a model can serve, tags file or not
    res = runner.invoke(app, ["retrieve", "--db", db, "--model", model, "--tags", str(tags), "--beta", "1",
                              "--k", "2"])
    assert res.exit_code == 0, res.output
    assert {orjson.loads(x)["tag"] for x in res.stdout.splitlines()} == {None}


def test_cli_users_batching_ensemble_then_retrieve(tmp_path: Path):
    make_shop_db(tmp_path / "shop.duckdb").close()
    runner = CliRunner()
    db, model = str(tmp_path / "shop.duckdb"), str(tmp_path / "m")
    res = runner.invoke(app, ["train-towers", "--db", db, "--out-dir", model, "--epochs", "2", "--dim", "8",
                              "--batching", "users", "--batch-size", "8", "--negatives", "1000", "--history-dropout",
                              "0.2", "--history-embedding", "separate", "--lr-schedule", "cosine", "--ensemble", "2",
                              "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "recs.jsonl"
    res = runner.invoke(app, ["retrieve", "--db", db, "--model", model, "--k", "3", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 24 * 3
    for bad in (["--batching", "rows"], ["--history-embedding", "x"], ["--batching", "users", "--logq"],
                ["--lr-schedule", "step"], ["--loss-weighting", "all"], ["--pooling", "max"]):
        res = runner.invoke(app, ["train-towers", "--db", db, "--out-dir", model, *bad])
        assert res.exit_code == 2 and ("expected" in res.output or "logq" in res.output), res.output


def test_tag_rows_carry_the_tags_provenance_and_users_without_tags_work(shop, tmp_path: Path) -> None:
    """Issue 8: rows a tag produced say which split/phase the tag's history was cut for; a user whose record has
    no usable tag (an empty list) gets plain user-only rows."""
    con, model, _ = shop
    path = tmp_path / "tags.jsonl"
    base = {"compressed": "", "interests": []}
    path.write_bytes(orjson.dumps({"user_id": "u00", "split": "loo", "phase": "test", "tags": [{"tag": "coffee"}],
                                   **base}) + b"\n" + orjson.dumps({"user_id": "u01", "tags": [], **base}) + b"\n")
    tags, empty = read_tags(path)
    assert tags["u00"] == [Tag("coffee", None, None, "loo", "test")] and tags["u01"] == [] and empty == 1
    recs = list(retrieve(con, model, tags, beta=0.5, k=4, exact=True, users=["u00", "u01"]))
    tagged = [r for r in recs if r["tag"] is not None]
    assert tagged and all((r["split"], r["phase"]) == ("loo", "test") for r in tagged)
    assert [r for r in recs if r["user_id"] == "u01"] and all(
        "split" not in r for r in recs if r["user_id"] == "u01")
    # one history per user: a second record cut for another phase would stamp its rows with the first's provenance
    path.write_bytes(orjson.dumps({"user_id": "u00", "split": "loo", "phase": "valid", "tags": [{"tag": "tea"}],
                                   **base}) + b"\n" + path.read_bytes())
    with pytest.raises(BadInput, match=r"tags.jsonl:2: user 'u00': tags from another history than line 1's"):
        read_tags(path)
    # tags cut for another split (or version of it) than the model trained on are refused; the model's own pass
    with pytest.raises(BadInput, match=r"t.jsonl:3: user 'u00': .*but the model trained on"):
        check_tags_split(tags, model, "t.jsonl", {"u00": 3})
    own = Tag("coffee", split=model.config["protocol"], phase="test",
              split_id=model.config["split_fingerprint"][:16])
    check_tags_split({"u00": [own]}, model, "t.jsonl", {})
