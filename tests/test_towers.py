"""TAR towers, losses, features and training loop (§2.3) on a tiny synthetic shop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from towers_fixtures import (  # noqa: F401
    assert_resumes_like_uninterrupted,
    make_shop_db,
    one_thread,
    top_item_in_own_category,
)

from recgpt_cli.splits import load_split, make_split
from recgpt_cli.towers import TowerConfig, load_model, score_all, train_towers
from recgpt_cli.towers.data import build_features, discretize, gather_sequences, tokenize
from recgpt_cli.towers.losses import info_nce, l_cate, l_tar

TINY = dict(epochs=3, dim=8, batch_size=32, n_negatives=8, patience=5, device="cpu")


def test_info_nce_shape_and_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = q.clone()
    neg = torch.tensor([[-1.0, 0.0]])
    loss = info_nce(q, pos, neg)
    assert loss.shape == ()
    # row 0: logits [1 (pos), 0 (in-batch other), -1 (neg)]; row 1: [1, 0, 0]; loss = mean of -log softmax[0]
    row0 = -torch.log_softmax(torch.tensor([1.0, 0.0, -1.0]), 0)[0]
    row1 = -torch.log_softmax(torch.tensor([1.0, 0.0, 0.0]), 0)[0]
    expected = (row0 + row1) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_info_nce_masks_accidental_hits_and_applies_logq():
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    masked = info_nce(q, pos, neg, pos_ids=torch.tensor([7]), neg_ids=torch.tensor([7, 3]))
    # the negative with id 7 IS the positive, so only [1 (pos), 0] remain
    assert masked.item() == pytest.approx(-torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[0].item(), abs=1e-6)
    plain = info_nce(q, pos, neg[1:])
    corrected = info_nce(q, pos, neg[1:], log_q_pos=torch.tensor([np.log(0.5)]), log_q_neg=torch.tensor([0.0]))
    assert corrected.item() < plain.item()  # a popular (often sampled) positive gets its logit raised back


@pytest.mark.parametrize("which", ["col", "tag", "cate"])
def test_each_loss_decreases_on_toy_set(which):
    torch.manual_seed(0)
    q = torch.nn.Parameter(torch.randn(16, 8))
    items = torch.nn.Parameter(torch.randn(40, 8))
    pos_ids = torch.arange(16)
    cat = torch.arange(40) % 4
    neg_ids = torch.arange(16, 40)
    opt = torch.optim.Adam([q, items], lr=0.05)
    losses = []
    for _ in range(25):
        if which == "cate":
            loss = l_cate(q, items[pos_ids + 4], items[neg_ids], cat[pos_ids], cat[neg_ids])
        else:
            loss = info_nce(q, items[pos_ids], items[neg_ids], pos_ids=pos_ids, neg_ids=neg_ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_l_cate_prefers_same_category_positives():
    # tag points at category 0; items of category 0 align with it, category 1 does not
    h_t = torch.tensor([[1.0, 0.0]])
    same = torch.tensor([[1.0, 0.0]])
    other = torch.tensor([[0.0, 1.0]])
    good = l_cate(h_t, same, other, torch.tensor([0]), torch.tensor([1]))
    bad = l_cate(h_t, other, same, torch.tensor([1]), torch.tensor([0]))
    assert good < bad
    # a "negative" of the positive's own category is masked, not counted
    masked = l_cate(h_t, same, torch.cat([same, other]), torch.tensor([0]), torch.tensor([0, 1]))
    assert masked.item() == pytest.approx(good.item(), abs=1e-6)
    assert l_tar(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0), alpha=0.5).item() == 4.0
    assert l_tar(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0), alpha=0.5, tag_weight=0.5).item() == 2.5


def test_tokenize_and_discretize():
    assert tokenize("Trail-Running SHOES, size 42") == ["trail", "running", "shoes", "size", "42"]
    b = discretize(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), 2)
    assert b[-1] == 0 and b[0] == 1 and b[3] == 2


def test_features_use_train_split_only(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    make_split(con, "loo")
    split = load_split(con, "loo")
    feats, behaviors, vocab = build_features(con, split)
    assert behaviors == ["click", "purchase"]
    train = set(zip(split.train.user.tolist(), split.train.item.tolist(), strict=True))
    held = set(zip(np.r_[split.valid.user, split.test.user].tolist(),
                   np.r_[split.valid.item, split.test.item].tolist(), strict=True))
    assert held  # the check below could fail
    row, item, _ = gather_sequences(feats, np.arange(split.n_users))
    seq_pairs = set(zip(row.tolist(), item.tolist(), strict=True))
    assert seq_pairs <= train and not seq_pairs & held
    pos_pairs = set(zip(feats.train_user.tolist(), feats.train_item.tolist(), strict=True))
    assert pos_pairs == train
    assert "shoes" in vocab and feats.item_feats.shape == (40, 7)  # id, 3 levels, brand, price, sales


def test_train_resume_after_kill_matches_uninterrupted(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    full = train_towers(con, tmp_path / "full", TowerConfig(**TINY))

    def kill(epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_towers(con, tmp_path / "killed", TowerConfig(**TINY), after_epoch=kill)
    resumed = train_towers(con, tmp_path / "killed", TowerConfig(**TINY))
    assert resumed.resumed_from_epoch == 1 and full.resumed_from_epoch == 0
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    sa = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    sb = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)
    # a finished run is not retrained; more --epochs continue it; another config starts over
    again = train_towers(con, tmp_path / "killed", TowerConfig(**TINY))
    assert again.resumed_from_epoch == 3 and again.history == resumed.history
    more = train_towers(con, tmp_path / "killed", TowerConfig(**{**TINY, "epochs": 4}))
    assert more.resumed_from_epoch == 3 and [h["epoch"] for h in more.history] == [1, 2, 3, 4]
    from rich.console import Console

    said = Console(record=True, width=200)
    other = train_towers(con, tmp_path / "killed", TowerConfig(**{**TINY, "dim": 4, "epochs": 1}), console=said)
    assert other.resumed_from_epoch == 0 and len(other.history) == 1
    # the start-over is said, with what changed (was: silent)
    assert f"not resuming {tmp_path / 'killed'}: it was trained with another --dim" in said.export_text()


def test_run_saved_before_a_field_existed_still_resumes(tmp_path: Path):
    # a field added later (here init_std, item_features) is missing from an older config.json: the run did what
    # the field's default does, so it resumes; a value other than the default starts over
    con = make_shop_db(tmp_path / "shop.duckdb")
    train_towers(con, tmp_path / "m", TowerConfig(**{**TINY, "epochs": 2}))
    path = tmp_path / "m" / "config.json"
    saved = json.loads(path.read_text())
    del saved["init_std"], saved["item_features"]
    path.write_text(json.dumps(saved))
    more = train_towers(con, tmp_path / "m", TowerConfig(**{**TINY, "epochs": 3}))
    assert more.resumed_from_epoch == 2
    other = train_towers(con, tmp_path / "m", TowerConfig(**{**TINY, "epochs": 1, "init_std": 0.02}))
    assert other.resumed_from_epoch == 0


def test_training_learns_and_score_all_reorders(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    report = train_towers(con, tmp_path / "m", TowerConfig(**{**TINY, "epochs": 6}))
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    model = load_model(tmp_path / "m")
    split = load_split(con, "recbole")
    scores = score_all(model, split)
    assert scores.shape == (split.n_users, split.n_items)
    # users shop in one category: their best-scored item is in that category for most users
    assert top_item_in_own_category(scores, split) > 0.7
    # same scores when split_data lists ids in another order
    split.user_ids = split.user_ids[::-1]
    assert torch.allclose(score_all(model, split), scores.flip(0))


@pytest.mark.parametrize("options", [{"use_user_id": False}, {"use_user_id": False, "item_id_residual": True}])
def test_tower_options_learn_and_reload(tmp_path: Path, options: dict):
    con = make_shop_db(tmp_path / "shop.duckdb")
    report = train_towers(con, tmp_path / "m", TowerConfig(**{**TINY, "epochs": 12, **options}))
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    model = load_model(tmp_path / "m")
    assert model.net.user_tower.id_emb is None and model.config["use_user_id"] is False
    assert model.net.item_tower.id_residual is options.get("item_id_residual", False)
    split = load_split(con, "recbole")
    assert top_item_in_own_category(score_all(model, split), split) > 0.7


def test_ids_only_item_tower_is_the_id_embedding_and_reloads(tmp_path: Path):
    # --no-item-features: h_v = EMB(item id) alone (SASRec's item table), no feature tables, no DNN
    con = make_shop_db(tmp_path / "shop.duckdb")
    report = train_towers(con, tmp_path / "m", TowerConfig(**{**TINY, "epochs": 6, "item_features": False}))
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    model = load_model(tmp_path / "m")
    tower = model.net.item_tower
    assert tower.dnn is None and len(tower.emb) == 1 and model.config["item_features"] is False
    feats = torch.as_tensor(model.feats.item_feats)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(tower.emb[0](feats[:, 0]), dim=-1)
        assert torch.allclose(model.net.items(feats), expected)
        # the other feature columns do not matter any more
        assert torch.allclose(model.net.items(torch.cat([feats[:, :1], torch.zeros_like(feats[:, 1:])], 1)), expected)


def test_init_std_starts_every_embedding_small_with_zero_padding():
    from recgpt_cli.towers.model import TAR, TowerShapes
    shapes = TowerShapes(n_users=50, item_field_sizes=[400, 30, 30], behaviors=["click", "buy"], vocab_size=40)
    torch.manual_seed(0)
    small = TAR(shapes, dim=32, init_std=0.02, user_tower="sequential", max_seq_len=20)
    default = TAR(shapes, dim=32, user_tower="sequential", max_seq_len=20)
    tables = [m for m in small.modules() if isinstance(m, torch.nn.Embedding)]
    assert len(tables) >= 6  # item fields, user id, tag words, positions, behaviours
    for emb in tables:
        w = emb.weight.detach()
        rows = w if emb.padding_idx is None else torch.cat([w[: emb.padding_idx], w[emb.padding_idx + 1:]])
        assert abs(float(rows.std()) - 0.02) < 0.005
        if emb.padding_idx is not None:
            assert float(w[emb.padding_idx].abs().sum()) == 0.0
    assert float(default.item_tower.emb[0].weight.detach().std()) > 0.5  # 0 = torch's N(0, 1) as before


USERS = dict(batching="users", batch_size=8, n_negatives="all", history_dropout=0.3, lr_schedule="cosine")


@pytest.mark.parametrize(("negatives", "weighting"), [("all", "user"), (6, "user"), ("all", "pair")])
def test_users_batching_learns_categories(tmp_path: Path, negatives: int | str, weighting: str):
    # one row per user, masked history -> all its train items; full softmax and sampled candidates
    con = make_shop_db(tmp_path / "shop.duckdb")
    cfg = TowerConfig(**{**TINY, **USERS, "n_negatives": negatives, "epochs": 30, "lr": 2e-2, "eval_every": 10,
                         "patience": 30, "loss_weighting": weighting,
                         "tag_weight": 0.0 if weighting == "pair" else 1.0})
    report = train_towers(con, tmp_path / "m", cfg)
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    assert [h["epoch"] for h in report.history if "valid_ndcg@10" in h] == [10, 20, 30]
    model = load_model(tmp_path / "m")
    split = load_split(con, "recbole")
    assert top_item_in_own_category(score_all(model, split), split) > 0.7


def test_users_batching_resumes_like_uninterrupted(tmp_path: Path):
    assert_resumes_like_uninterrupted(make_shop_db(tmp_path / "shop.duckdb"), tmp_path, {**TINY, **USERS}, kill_at=2)


def test_cosine_schedule_and_config_errors():
    from recgpt_cli.towers.train import lr_at

    cfg = TowerConfig(lr=1.0, epochs=4, lr_schedule="cosine")
    assert [round(lr_at(cfg, e), 4) for e in (1, 2, 3, 4)] == [1.0, 0.8536, 0.5, 0.1464]
    assert lr_at(TowerConfig(lr=0.3), 7) == 0.3
    for bad in ({"batching": "rows"}, {"lr_schedule": "step"}, {"batching": "users", "logq": True},
                {"eval_every": 0}, {"loss_weighting": "all"}, {"history_embedding": "x"}, {"ensemble": 0},
                {"n_negatives": "most"}, {"n_negatives": -1}, {"batching": "next-item"},
                {"user_tower": "sequential"}, {"user_tower": "sequential", "batching": "next-item", "n_heads": 3},
                {"protocol": "kfold"}):
        with pytest.raises(ValueError):
            train_towers(None, "unused", TowerConfig(**bad))  # type: ignore[arg-type]


def test_separate_history_embedding_learns_and_reloads(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    cfg = TowerConfig(**{**TINY, **USERS, "history_embedding": "separate", "epochs": 30, "lr": 2e-2,
                         "patience": 30})
    train_towers(con, tmp_path / "m", cfg)
    model = load_model(tmp_path / "m")
    assert model.net.history_emb is not None and model.net.history_emb.num_embeddings == 40
    split = load_split(con, "recbole")
    assert top_item_in_own_category(score_all(model, split), split) > 0.7


def test_ensemble_scores_are_member_mean_and_resume(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    cfg = {**TINY, **USERS, "ensemble": 2, "seed": 5}

    def kill(epoch: int) -> None:
        if epoch == 2 and (tmp_path / "m" / "member-1").exists():
            raise KeyboardInterrupt  # dies inside the second member

    with pytest.raises(KeyboardInterrupt):
        train_towers(con, tmp_path / "m", TowerConfig(**cfg), after_epoch=kill)
    assert not (tmp_path / "m" / "model.pt").exists()  # no half-made ensemble is ever loadable
    report = train_towers(con, tmp_path / "m", TowerConfig(**cfg))
    assert [r.resumed_from_epoch for r in report.members] == [3, 2]
    model = load_model(tmp_path / "m")
    members = [load_model(tmp_path / "m" / f"member-{k}") for k in (0, 1)]
    assert [m.config["seed"] for m in members] == [5, 6]
    split = load_split(con, "recbole")
    mean_cos = sum(torch.nn.functional.normalize(m.user_vectors(), dim=1)
                   @ torch.nn.functional.normalize(m.item_vectors(), dim=1).T for m in members) / 2
    assert torch.allclose(score_all(model, split), mean_cos, atol=1e-5)
    assert model.item_vectors().shape[1] == 2 * TINY["dim"]
    assert 0.0 <= report.best_valid_ndcg10 <= 1.0


def test_features_do_not_depend_on_duckdb_row_order(tmp_path: Path) -> None:
    """The history sequences are the same on every build: DuckDB's parallel GROUP BY returns rows in any order,
    and which of a (user, behaviour, item)'s rows was kept used to follow it, so two trainings with one seed
    differed (was: different features.npz and weights run to run)."""
    from recgpt_cli.importers import import_jsonl
    from recgpt_cli.store import open_db

    sample = Path(__file__).resolve().parents[1] / "sample_data"
    con = open_db(tmp_path / "s.duckdb")
    import_jsonl(con, users=sample / "users.jsonl", items=sample / "items.jsonl", behaviors=sample / "behaviors.jsonl")
    con.execute("SET threads = 2")
    make_split(con, "recbole")
    split = load_split(con, "recbole")
    builds = [build_features(con, split)[0] for _ in range(4)]
    con.close()
    for other in builds[1:]:
        assert np.array_equal(other.seq_item, builds[0].seq_item) and np.array_equal(other.seq_beh, builds[0].seq_beh)
