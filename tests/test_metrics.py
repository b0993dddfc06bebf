"""Metrics against hand-computed values (RecBole definitions), K=3, two evaluated users + one without test items.

Fixture: 6 items; train u0 {0,1,2}, u1 {0,1}, u2 {0,4} → train counts [3,2,1,0,1,0];
test u0 {3}, u1 {4,5}, u2 {} (excluded). Top-3: u0 [3,4,5] (hit @1), u1 [2,5,4] (hits @2,@3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recgpt_cli.metrics import (
    category_diversity,
    compute_metrics,
    full_rank_topk,
    gini_index,
    hr_tag_category,
    popularity_deciles,
    tail_items,
)
from recgpt_cli.splits import Interactions, SplitData


def _inter(pairs):
    u = np.array([p[0] for p in pairs], dtype=np.int64)
    i = np.array([p[1] for p in pairs], dtype=np.int64)
    return Interactions(u, i, np.zeros(len(pairs), dtype="datetime64[us]"))


def make_split_data(train, valid, test, n_users=3, n_items=6) -> SplitData:
    users = [f"u{j}" for j in range(n_users)]
    items = [f"i{j}" for j in range(n_items)]
    return SplitData("recbole", users, items, {u: j for j, u in enumerate(users)},
                     {v: j for j, v in enumerate(items)}, _inter(train), _inter(valid), _inter(test))


@pytest.fixture
def data() -> SplitData:
    return make_split_data(train=[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 4)], valid=[],
                           test=[(0, 3), (1, 4), (1, 5)])


TOPK = np.array([[3, 4, 5], [2, 5, 4], [1, 2, 3]])


def test_accuracy_metrics_hand_computed(data):
    m = compute_metrics(TOPK, data, "test", ks=(1, 3))
    assert m["n_users"] == 2
    ndcg_u1 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))  # |pos| = 2 < K: ideal uses 2 slots
    expected = {
        "recall@1": 0.5, "recall@3": 1.0,
        "ndcg@1": 0.5, "ndcg@3": (1.0 + ndcg_u1) / 2,
        "hit@1": 0.5, "hit@3": 1.0,
        "mrr@1": 0.5, "mrr@3": (1 + 1 / 2) / 2,
        "precision@1": 0.5, "precision@3": (1 / 3 + 2 / 3) / 2,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    assert m["ndcg@3"] == pytest.approx(0.846713, abs=1e-6)


def test_beyond_accuracy_metrics_hand_computed(data):
    m = compute_metrics(TOPK, data, "test", ks=(1, 3), item_category=np.array([0, 0, 1, 1, 1, 2]),
                        with_deciles=True)
    assert m["itemcoverage@1"] == pytest.approx(2 / 6) and m["itemcoverage@3"] == pytest.approx(4 / 6)
    assert m["averagepopularity@1"] == pytest.approx((0 + 1) / 2)
    assert m["averagepopularity@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    # exposures @3: items 3:1, 4:2, 5:2, 2:1 → sorted [0,0,1,1,2,2]: (-1 + 1 + 3*2 + 5*2) / (6 * 6)
    assert m["giniindex@3"] == pytest.approx(16 / 36)
    assert m["giniindex@1"] == pytest.approx((3 + 5) / (6 * 2))
    # tail = least popular 10% of seen items (max(int(0.4),1)=1 → item 2, tie with item 4 broken by index)
    # plus never-seen items 3 and 5
    assert m["tailpercentage@3"] == pytest.approx(2 / 3) and m["tailpercentage@1"] == pytest.approx(1.0)
    assert m["categorydiversity@3"] == pytest.approx(2 / 3) and m["categorydiversity@1"] == pytest.approx(1.0)
    # popularity order 0,1,2,4,3,5 → deciles 0,1,3,5,6,8
    assert m["exposure_decile@3"] == pytest.approx([0, 0, 0, 1 / 6, 0, 2 / 6, 1 / 6, 0, 2 / 6, 0])
    assert m["hitrate_decile@3"] == pytest.approx([0, 0, 0, 0, 0, 0.5, 1, 0, 0.5, 0])


def test_helpers_edge_cases():
    assert tail_items(np.array([3, 2, 1, 0, 1, 0])).tolist() == [False, False, True, True, False, True]
    assert tail_items(np.array([5, 2, 1]), tail_ratio=2).tolist() == [False, True, True]
    assert gini_index(np.array([1, 1, 1, 1])) == 0.0
    assert gini_index(np.array([0, 0, 0, 4])) == pytest.approx(0.75)
    assert popularity_deciles(np.array([5, 9, 1])).tolist() == [3, 0, 6]
    # padding (-1) is not a category; unknown category (-1) counts once per item
    cats = np.array([0, -1, -1, 1])
    assert category_diversity(np.array([[0, 1, 2, -1]]), cats, 4).tolist() == [3 / 4]
    assert hr_tag_category({"a": {"x", "y"}, "b": {"z"}}, {"a": "x", "b": "y", "c": "x"}) == pytest.approx(1 / 3)
    assert hr_tag_category({}, {}) == 0.0


def test_padded_rows_are_misses(data):
    topk = np.array([[3, -1, -1], [-1, -1, -1], [0, 1, 2]])
    m = compute_metrics(topk, data, "test", ks=(3,))
    assert m["hit@3"] == 0.5 and m["itemcoverage@3"] == pytest.approx(1 / 6)
    assert m["averagepopularity@3"] == 0.0 and m["giniindex@3"] == pytest.approx((2 * 6 - 6 - 1) / 6)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_full_rank_topk_masks_history(as_tensor):
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.2, 0.3, 0.4, 0.1]], dtype=np.float32)
    indptr, indices = np.array([0, 2, 5]), np.array([0, 1, 0, 1, 2])
    s = torch.from_numpy(scores) if as_tensor else scores
    top = full_rank_topk(s, (indptr, indices), k=3)
    assert top.tolist() == [[3, 2, -1], [3, -1, -1]]
    assert full_rank_topk(s, None, k=2).tolist() == [[0, 1], [2, 1]]
    # rows = user indices of the score rows (here: only user 1), small batches
    assert full_rank_topk(s[1:], (indptr, indices), k=1, rows=np.array([1]), batch_rows=1).tolist() == [[3]]
    assert scores[0, 0] == pytest.approx(0.9)  # input not modified
