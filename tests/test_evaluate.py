"""evaluate: recommendation JSONL → metrics on the stored split, errors with file:line, the CLI's JSON and plots."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

from recgpt_cli.errors import BadInput
from recgpt_cli.evaluate import evaluate_recs, read_recs, run_evaluation
from recgpt_cli.splits import load_split, make_split
from recgpt_cli.store import open_db


@pytest.fixture
def db(tmp_path):
    """3 users x 4 interactions over 6 items in 2 categories; loo test item = the last one in time."""
    path = tmp_path / "e.duckdb"
    con = open_db(path)
    con.executemany("INSERT INTO items (item_id, title, category_leaf) VALUES (?, ?, ?)",
                    [[f"i{j}", f"item {j}", "a" if j < 3 else "b"] for j in range(6)])
    t0 = datetime(2025, 3, 1)
    seqs = {"u0": ["i0", "i1", "i2", "i3"], "u1": ["i1", "i2", "i3", "i4"], "u2": ["i2", "i3", "i4", "i5"]}
    con.executemany("INSERT INTO behaviors (user_id, item_id, type, ts) VALUES (?, ?, 'click', ?)",
                    [[u, v, t0 + timedelta(days=j)] for u, seq in seqs.items() for j, v in enumerate(seq)])
    make_split(con, "loo")
    yield con, path
    con.close()


def test_evaluate_recs_on_loo(db):
    con, _ = db
    # tests: u0→i3, u1→i4, u2→i5. u0 hits at rank 1, u1 at rank 2, u2 misses (no list)
    m = evaluate_recs(con, {"u0": ["i3", "i5"], "u1": ["i5", "i4"]}, protocol="loo", ks=(1, 2))
    assert m["n_users"] == 3 and m["hit@1"] == pytest.approx(1 / 3) and m["hit@2"] == pytest.approx(2 / 3)
    assert m["mrr@2"] == pytest.approx((1 + 0.5) / 3) and m["itemcoverage@2"] == pytest.approx(3 / 6)
    assert m["categorydiversity@2"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # all "b"; u2: no list
    with pytest.raises(BadInput, match="unknown item"):
        evaluate_recs(con, {"u0": ["nope"]}, protocol="loo")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_recs_orders_by_rank_or_score_and_reports_bad_lines(db, tmp_path):
    con, _ = db
    data = load_split(con, "loo")
    p = _write(tmp_path / "r.jsonl", [
        {"user_id": "u0", "item_id": "i5", "score": 0.1}, {"user_id": "u0", "item_id": "i3", "score": 0.9},
        {"user_id": "u0", "item_id": "i3", "score": 0.5},  # duplicate, dropped
        {"user_id": "u1", "item_id": "i4", "rank": 2}, {"user_id": "u1", "item_id": "i0", "rank": 1}])
    topk, counts = read_recs(p, data, 3)
    iu = data.item_index
    assert topk[data.user_index["u0"]].tolist() == [iu["i3"], iu["i5"], -1]
    assert topk[data.user_index["u1"]].tolist() == [iu["i0"], iu["i4"], -1]
    assert counts == {"rows": 5, "users": 2, "duplicates_dropped": 1}
    bad = _write(tmp_path / "bad.jsonl", [{"user_id": "u0", "item_id": "i1", "rank": 1},
                                          {"user_id": "u0", "item_id": "zzz", "rank": 2}])
    with pytest.raises(BadInput, match=r"bad\.jsonl:2: unknown item_id 'zzz'"):
        read_recs(bad, data, 3)
    with pytest.raises(BadInput, match=r":1: need a \"rank\""):
        read_recs(_write(tmp_path / "x.jsonl", [{"user_id": "u0", "item_id": "i1"}]), data, 3)
    # a rank and a score are not one scale; ranks start at 1; booleans are not numbers
    for rows, match in (([{"user_id": "u0", "item_id": "i3", "rank": 1}, {"user_id": "u0", "item_id": "i5",
                                                                          "score": 0.5}], ":2: user 'u0' has rows"),
                        ([{"user_id": "u0", "item_id": "i3", "rank": 0}], ":1: rank must be at least 1"),
                        ([{"user_id": "u0", "item_id": "i3", "score": True}], ":1: score must be a finite number")):
        with pytest.raises(BadInput, match=match):
            read_recs(_write(tmp_path / "m.jsonl", rows), data, 3)


def test_run_evaluation_baseline_and_compare(db, tmp_path):
    con, _ = db
    recs = _write(tmp_path / "r.jsonl", [{"user_id": "u2", "item_id": "i5", "rank": 1},
                                         {"user_id": "u2", "item_id": "i2", "rank": 2}])  # i2: u2's train item
    res = run_evaluation(con, baseline="pop", compare_path=recs, protocol="loo", ks=(2,), plot_dir=tmp_path / "plots")
    assert list(res.systems) == ["baseline:pop", "recs:r.jsonl"]
    out = res.to_json()
    assert out["compare"]["hit@2"] == pytest.approx(1 / 3) and len(out["exposure_decile@2"]) == 10
    assert out["compare"]["history_items_in_recs"] == 1 and out["history_items_in_recs"] == 0
    assert sorted(p.name for p in res.plots) == ["category_diversity@2.png", "exposure_deciles@2.png"]
    assert all(p.stat().st_size > 1000 for p in res.plots)
    with pytest.raises(BadInput, match="exactly one"):
        run_evaluation(con, baseline="pop", recs_path=recs)


def test_cli_json_and_errors(db, tmp_path):
    from recgpt_cli.cli import app

    con, path = db
    con.close()
    recs = _write(tmp_path / "r.jsonl", [{"user_id": "u0", "item_id": "i3", "rank": 1}])
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(recs), "--protocol", "loo", "--k", "1,2",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["hit@1"] == pytest.approx(1 / 3) and "ndcg@2" in out and "giniindex@2" in out
    table = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(recs), "--protocol", "loo"])
    assert table.exit_code == 0 and "ndcg@10" in table.stdout
    bad = _write(tmp_path / "bad.jsonl", [{"user_id": "nobody", "item_id": "i3", "rank": 1}])
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(bad), "--protocol", "loo"])
    assert res.exit_code == 2 and "bad.jsonl:1: unknown user_id 'nobody'" in res.output
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(recs), "--k", "ten"])
    assert res.exit_code == 2
    assert np.isfinite(out["averagepopularity@1"])
    # more cut-off than items, or a file where the plots folder goes: exit 2 before any work (was: exit 1)
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(recs), "--protocol", "loo", "--k", "5000"])
    assert res.exit_code == 2 and "--k 5000: more than the 6 items" in res.output
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--baseline", "pop", "--protocol", "loo", "--k", "20",
                              "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["hit@20"] == 1.0, res.output  # 6 items, all ranked
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(recs), "--protocol", "loo", "--plot",
                              str(recs)])
    assert res.exit_code == 2 and "is a file, expected a folder" in res.output
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(recs), "--protocol", "loo", "--plot", ""])
    assert res.exit_code == 2 and "--plot '': empty folder name" in res.output  # not PNGs in the current folder
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", "-", "--compare", "-", "--protocol", "loo"])
    assert res.exit_code == 2 and "--recs and --compare both read stdin" in res.output
    # a bad option leaves no split behind (the fixture's DB has loo only)
    res = runner.invoke(app, ["evaluate", "--db", str(path), "--recs", str(recs), "--phase", "nope"])
    assert res.exit_code == 2
    con = open_db(path, read_only=True)
    assert con.execute("SELECT list(protocol) FROM split_meta").fetchone()[0] == ["loo"]
    con.close()


class _Phi:
    """Stand-in φ: 'pan' → category a, anything else → b."""

    def predict_leaf(self, texts):
        return ["a" if "pan" in t else "b" for t in texts]


LOO = {"split": "loo", "phase": "test"}  # made from a split-aware history (issue 8)


def test_tag_category_hit_rate(db, tmp_path):
    from recgpt_cli.evaluate import next_item_categories, tag_category_hit_rate

    con, _ = db
    assert next_item_categories(con, "loo") == {"u0": "b", "u1": "b", "u2": "b"}
    made = {**LOO, "split_id": load_split(con, "loo").split_id}
    tags = _write(tmp_path / "tags.jsonl", [
        {"user_id": "u0", "tags": [{"tag": "pan"}], **made},                     # {a}: miss
        {"user_id": "u1", "tags": [{"tag": "pan"}, {"tag": "shoe"}], **made},      # {a, b}: hit
        {"user_id": "u2", "tags": [], **made},                                   # nothing: miss
        {"user_id": "ghost", "tags": [{"tag": "shoe"}], **made}])                  # no next item: not counted
    out = tag_category_hit_rate(con, tags, "loo", phi=_Phi())
    assert out == {"hr_tagcategory@30": pytest.approx(1 / 3), "hr_tagcategory@30_users": 3,
                   "hr_tagcategory@30_users_without_next_item": 1}
    # only the first n_tags tags count
    assert tag_category_hit_rate(con, tags, "loo", n_tags=1, phi=_Phi())["hr_tagcategory@1"] == 0.0
    with pytest.raises(BadInput, match=r"tags\.jsonl:1"):
        tag_category_hit_rate(con, _write(tmp_path / "tags.jsonl", [{"user_id": "u0"}]), "loo", phi=_Phi())
    # tags cut for an earlier version of the split (before a rebuild) are refused, not scored
    stale = _write(tmp_path / "stale.jsonl", [{"user_id": "u1", "tags": [{"tag": "shoe"}], **LOO,
                                               "split_id": "f" * 16}])
    with pytest.raises(BadInput, match=r"stale\.jsonl:1: .*another version of the loo split"):
        tag_category_hit_rate(con, stale, "loo", phi=_Phi())
