"""Baselines: Pop order, ItemKNN similarities by hand (cosine, shrink, top-k neighbours), BPR learns and is seeded,
EASE and DLAE closed forms by hand and chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recgpt_cli.baselines import (
    dlae_weights,
    ease_weights,
    fit_baseline,
    fit_bpr,
    fit_dlae,
    fit_ease,
    fit_itemknn,
    recommend,
    write_recs,
)
from recgpt_cli.errors import BadInput
from recgpt_cli.evaluate import read_recs
from recgpt_cli.splits import Interactions, SplitData


def _split(train, valid=(), test=(), n_users=3, n_items=4) -> SplitData:
    def inter(pairs):
        pairs = list(pairs)
        return Interactions(np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs],
                            dtype=np.int64), np.zeros(len(pairs), dtype="datetime64[us]"))

    users, items = [f"u{j}" for j in range(n_users)], [f"i{j}" for j in range(n_items)]
    return SplitData("recbole", users, items, {u: j for j, u in enumerate(users)},
                     {v: j for j, v in enumerate(items)}, inter(train), inter(valid), inter(test))


# item vectors over users: i0 = i1 = [1,1,0], i2 = [0,1,1], i3 = [0,0,1]
TRAIN = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 2), (2, 3)]


def test_pop_ranks_by_train_count_and_masks_history():
    data = _split(TRAIN + [(2, 0)])  # counts: i0 3, i1 2, i2 2, i3 1
    top = recommend(fit_baseline("pop", data), data, k=4)
    assert top[0].tolist() == [2, 3, -1, -1]  # u0 had i0, i1
    assert top[2][0] == 1  # u2 had i0, i2, i3


def test_itemknn_cosine_by_hand():
    data = _split(TRAIN)
    s = fit_itemknn(data, k=100).score(np.array([0, 2])).numpy()
    # u0 = {i0, i1}: score(i2) = sim(0,2) + sim(1,2) = 1/2 + 1/2; score(i0) = sim(1,0) = 2/2
    assert s[0, 2] == pytest.approx(1.0, abs=1e-5) and s[0, 0] == pytest.approx(1.0, abs=1e-5)
    # u2 = {i2, i3}: score(i0) = sim(2,0) + sim(3,0) = 0.5 + 0; score(i2) = sim(3,2) = 1/sqrt(2)
    assert s[1, 0] == pytest.approx(0.5, abs=1e-5) and s[1, 2] == pytest.approx(2 ** -0.5, abs=1e-5)
    shrunk = fit_itemknn(data, k=100, shrink=2.0).score(np.array([0])).numpy()
    assert shrunk[0, 2] == pytest.approx(2 * 1 / (2 + 2), abs=1e-5)
    # one neighbour per item: i2 keeps only i3 (0.707 > 0.5), so u0's score for i2 vanishes
    top1 = fit_itemknn(data, k=1).score(np.array([0])).numpy()
    assert top1[0, 2] == 0.0 and top1[0, 0] == pytest.approx(1.0, abs=1e-5)


def _toy(n_users=40, n_items=20, seed=0):
    # two clusters of users and items: users like items of their own half
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for u in range(n_users):
        half = u % 2
        items = rng.permutation(np.arange(half * 10, half * 10 + 10))[:8]
        train += [(u, int(i)) for i in items[:6]]
        valid.append((u, int(items[6])))
        test.append((u, int(items[7])))
    return _split(train, valid, test, n_users=n_users, n_items=n_items)


def test_bpr_learns_and_is_deterministic():
    data = _toy()
    a = fit_bpr(data, seed=3, dim=8, lr=0.05, batch_size=64, max_epochs=10, patience=10)
    b = fit_bpr(data, seed=3, dim=8, lr=0.05, batch_size=64, max_epochs=2, patience=10)
    assert [h["loss"] for h in a.history[:2]] == [h["loss"] for h in b.history]  # same seed, same run
    assert a.history[-1]["loss"] < a.history[0]["loss"]
    top = recommend(a, data, k=2)
    same_half = (top // 10) == (np.arange(data.n_users) % 2)[:, None]
    assert same_half.mean() > 0.9


def test_bpr_early_stops():
    data = _toy()
    s = fit_bpr(data, seed=1, dim=4, lr=0.0, batch_size=64, max_epochs=50, patience=2)  # lr 0: never improves
    assert len(s.history) == 3


def test_unknown_baseline_and_recs_roundtrip(tmp_path):
    data = _split(TRAIN)
    with pytest.raises(BadInput, match="unknown baseline"):
        fit_baseline("svd", data)
    top = recommend(fit_baseline("pop", data), data, k=3)
    path = tmp_path / "pop.jsonl"
    assert write_recs(path, top, data) == int((top >= 0).sum())
    back, counts = read_recs(path, data, 3)
    assert np.array_equal(back, top) and counts["users"] == 3


def test_ease_two_items_by_hand():
    # users: {i0, i1}, {i0}, {i1}  ->  G = [[2, 1], [1, 2]]; with lambda = 1, P = (G + I)^-1 = [[3, -1], [-1, 3]] / 8
    # B_01 = -P_01 / P_11 = (1/8) / (3/8) = 1/3 (= ridge regression of i1 on i0: 1 / (2 + 1)); B_00 = B_11 = 0
    data = _split([(0, 0), (0, 1), (1, 0), (2, 1)], n_users=3, n_items=2)
    scorer = fit_ease(data, lam=1.0)
    assert scorer.b.numpy() == pytest.approx(np.array([[0.0, 1 / 3], [1 / 3, 0.0]]), abs=1e-6)
    # u1 = {i0}: score = X_u . B = [0, 1/3]
    assert scorer.score(np.array([1])).numpy()[0] == pytest.approx([0.0, 1 / 3], abs=1e-6)


def test_ease_is_the_constrained_least_squares_solution():
    # B minimises ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0: off the diagonal, (G + lambda I) B = G
    data = _split(TRAIN)
    x = np.zeros((3, 4))
    x[[p[0] for p in TRAIN], [p[1] for p in TRAIN]] = 1
    g = x.T @ x
    b = ease_weights(torch.tensor(g, dtype=torch.float32), 5.0).double().numpy()
    resid = (g + 5.0 * np.eye(4)) @ b - g
    assert np.allclose(resid[~np.eye(4, dtype=bool)], 0.0, atol=1e-5)
    assert np.all(np.diag(b) == 0.0)
    assert not np.allclose(b, 0.0)
    assert fit_ease(data, lam=5.0).score(np.array([0, 2])).numpy() == pytest.approx((x @ b)[[0, 2]], abs=1e-5)


def test_ease_picks_lambda_on_validation():
    data = _toy()
    scorer = fit_baseline("ease", data, lambdas=(1.0, 1e6))
    assert [h["lambda"] for h in scorer.history] == [1.0, 1e6]
    best = max(scorer.history, key=lambda h: h["valid_ndcg@10"])
    assert scorer.lam == best["lambda"]
    top = recommend(scorer, data, k=2)
    assert ((top // 10) == (np.arange(data.n_users) % 2)[:, None]).mean() > 0.9


def test_dlae_two_items_by_hand():
    # users: {i0, i1}, {i0}, {i1} -> G = [[2, 1], [1, 2]]; p = 0.5 -> p/(1-p) = 1, Lambda = diag(G) + 1 = 3I
    # B = (G + 3I)^-1 G = [[5, -1], [-1, 5]] / 24 . [[2, 1], [1, 2]] = [[9, 3], [3, 9]] / 24: the diagonal is not
    # forced to 0 (dropout keeps it below 1 instead)
    data = _split([(0, 0), (0, 1), (1, 0), (2, 1)], n_users=3, n_items=2)
    scorer = fit_dlae(data, p=0.5, lam=1.0)
    assert scorer.b.numpy() == pytest.approx(np.array([[9, 3], [3, 9]]) / 24, abs=1e-6)
    assert (scorer.p, scorer.lam, scorer.name) == (0.5, 1.0, "dlae")
    assert scorer.score(np.array([1])).numpy()[0] == pytest.approx([9 / 24, 3 / 24], abs=1e-6)  # u1 = {i0}


def test_dlae_is_the_expected_dropout_least_squares_solution():
    # B minimises E||X - (X*mask/(1-p)) B||^2 + lambda ||B||^2, whose normal equations are (G + Lambda) B = G
    x = np.zeros((3, 4))
    x[[q[0] for q in TRAIN], [q[1] for q in TRAIN]] = 1
    g = x.T @ x
    b = dlae_weights(torch.tensor(g, dtype=torch.float32), 0.25, 2.0).double().numpy()
    lam = np.diag(0.25 / 0.75 * np.diag(g) + 2.0)
    assert np.allclose((g + lam) @ b, g, atol=1e-5)
    assert np.all(np.diag(b) > 0) and np.all(np.diag(b) < 1)  # shrunk away from the identity, not to 0


def test_dlae_picks_dropout_and_lambda_on_validation():
    data = _toy()
    scorer = fit_baseline("dlae", data, dropouts=(0.25, 0.5), lambdas=(1.0, 1e6))
    assert [(h["p"], h["lambda"]) for h in scorer.history] == [(0.25, 1.0), (0.25, 1e6), (0.5, 1.0), (0.5, 1e6)]
    best = max(scorer.history, key=lambda h: h["valid_ndcg@10"])
    assert (scorer.p, scorer.lam) == (best["p"], best["lambda"])
    top = recommend(scorer, data, k=2)
    assert ((top // 10) == (np.arange(data.n_users) % 2)[:, None]).mean() > 0.9
    with pytest.raises(BadInput, match="dropout"):
        fit_dlae(data, p=1.0)
