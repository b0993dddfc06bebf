"""The sequential user tower: causal (a poisoned future changes nothing before it), one h_u, learns next items."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from towers_fixtures import (  # noqa: F401
    assert_hnsw_serves_like_exact,
    assert_resumes_like_uninterrupted,
    make_shop_db,
    one_thread,
    top_item_in_own_category,
)

from recgpt_cli.splits import load_split
from recgpt_cli.towers import TowerConfig, load_model, score_all, train_towers
from recgpt_cli.towers.model import TAR, TowerShapes, right_align

SEQ = dict(user_tower="sequential", batching="next-item", n_negatives="all", in_batch=False, dim=8, n_heads=2,
           batch_size=8, lr=1e-2, temperature=0.2, device="cpu", tag_weight=0.0)


def _net(**kw: object) -> TAR:
    torch.manual_seed(0)
    shapes = TowerShapes(n_users=3, item_field_sizes=[20, 4], behaviors=["click", "purchase"], vocab_size=5)
    return TAR(shapes, dim=8, user_tower="sequential", max_seq_len=6, n_layers=2, n_heads=2, dropout=0.1,
               **kw).eval()  # type: ignore[arg-type]


ITEM_FEATS = torch.stack([torch.arange(20), torch.arange(20) % 4], dim=1)


def _states(net: TAR, items: list[list[int]], behs: list[list[int]]) -> torch.Tensor:
    row = torch.tensor([r for r, seq in enumerate(items) for _ in seq])
    flat_items = torch.tensor([i for seq in items for i in seq])
    flat_beh = torch.tensor([b for seq in behs for b in seq])
    return net.sequence_states(flat_items, row, flat_beh, ITEM_FEATS, len(items))[0]


@pytest.mark.parametrize("history_embedding", ["tower", "separate"])
def test_a_poisoned_future_position_changes_nothing_before_it(history_embedding: str):
    net = _net(history_embedding=history_embedding)
    clean = _states(net, [[1, 2, 3, 4, 5]], [[0, 0, 1, 0, 1]])
    poisoned = _states(net, [[1, 2, 3, 17, 19]], [[0, 0, 1, 1, 0]])  # items and behaviours of the last two
    assert torch.allclose(clean[0, :3], poisoned[0, :3], atol=1e-6)  # positions 0..2 never read 3..4
    assert not torch.allclose(clean[0, 3:], poisoned[0, 3:], atol=1e-3)  # the poisoned positions do change
    past = _states(net, [[9, 2, 3, 4, 5]], [[0, 0, 1, 0, 1]])
    assert not torch.allclose(clean[0, 4], past[0, 4], atol=1e-3)  # the latest state does read the past


def test_h_u_is_one_vector_independent_of_padding_and_batch():
    net = _net()
    alone = net.users(torch.tensor([0]), torch.tensor([4, 7]), torch.tensor([0, 0]), torch.tensor([1, 0]),
                      ITEM_FEATS)
    # the same user next to a longer one (so its row is left-padded) and after an empty one
    batch = net.users(torch.tensor([1, 0, 2]), torch.tensor([1, 2, 3, 5, 6, 4, 7]),
                      torch.tensor([0, 0, 0, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1, 0]), ITEM_FEATS)
    assert alone.shape == (1, 8) and batch.shape == (3, 8)
    assert torch.allclose(alone[0], batch[1], atol=1e-6)
    assert torch.allclose(batch.norm(dim=1), torch.ones(3), atol=1e-5)  # unit vectors, as the pooled tower's


def test_right_align_keeps_the_latest_entries():
    keep, col, width = right_align(torch.tensor([0, 0, 0, 1]), 2, max_len=2)
    assert keep.tolist() == [False, True, True, True] and width == 2
    assert col.tolist() == [0, 1, 1]  # every row's latest entry is in the last column


def test_sequential_tower_learns_next_items_and_reloads(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    report = train_towers(con, tmp_path / "m", TowerConfig(**{**SEQ, "protocol": "loo", "epochs": 15,
                                                               "patience": 15, "eval_every": 5}))
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    model = load_model(tmp_path / "m")
    assert model.net.seq_tower is not None  # type: ignore[union-attr]
    split = load_split(con, "loo")
    scores = score_all(model, split)
    assert scores.shape == (split.n_users, split.n_items)
    assert top_item_in_own_category(scores, split) > 0.7  # users shop in one category
    assert_hnsw_serves_like_exact(model)

def test_sequential_tower_resumes_like_uninterrupted(tmp_path: Path):
    # dropout masks are seeded per epoch, so a resumed epoch repeats the uninterrupted one exactly
    assert_resumes_like_uninterrupted(make_shop_db(tmp_path / "shop.duckdb"), tmp_path,
                                      {**SEQ, "epochs": 3, "tag_weight": 0.5}, kill_at=2)
