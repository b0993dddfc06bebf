"""The variational user tower: its input, its KL against the composite prior, one h_u, learning, resume."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from towers_fixtures import (  # noqa: F401
    assert_hnsw_serves_like_exact,
    assert_resumes_like_uninterrupted,
    make_shop_db,
    one_thread,
    top_item_in_own_category,
)

from recgpt_cli.splits import ensure_split, load_split
from recgpt_cli.towers import TowerConfig, load_model, score_all, train_towers
from recgpt_cli.towers.batches import epoch_batches
from recgpt_cli.towers.config import check_config
from recgpt_cli.towers.data import build_features
from recgpt_cli.towers.model import TAR, TowerShapes
from recgpt_cli.towers.saved import build_net
from recgpt_cli.towers.variational import VariationalUserTower, log_normal

VAE = dict(user_tower="variational", batching="users", n_negatives="all", in_batch=False, normalize=False,
           temperature=1.0, dim=8, hidden_dim=16, n_layers=3, history_dropout=0.3, kl_gamma=0.02, batch_size=8,
           lr=1e-2, init_std=0.04, item_features=False, item_bias=True, use_user_id=False, tag_weight=0.0,
           loss_weighting="pair",
           device="cpu")


def _tower() -> VariationalUserTower:
    torch.manual_seed(0)
    return VariationalUserTower(n_items=10, hidden=6, latent=4, n_layers=3, dropout=0.5)


def test_input_is_the_normalised_multi_hot_with_repeats_counted_once():
    tower = _tower()
    # row 0: items 3, 5 and 3 again (a second behaviour); row 1: item 7; row 2: nothing
    items, offsets, weights = tower.bags(torch.tensor([3, 5, 3, 7]), torch.tensor([0, 0, 0, 1]), 3, 0.0)
    assert items.tolist() == [3, 5, 7] and offsets.tolist() == [0, 2, 3]
    assert torch.allclose(weights, torch.tensor([2**-0.5, 2**-0.5, 1.0]))
    torch.manual_seed(1)
    _, _, dropped = tower.bags(torch.arange(10).repeat(40), torch.arange(40).repeat_interleave(10), 40, 0.5)
    kept = dropped[dropped > 0]
    assert 0.4 < len(kept) / len(dropped) < 0.6  # about half hidden ...
    assert torch.allclose(kept, torch.full_like(kept, 10**-0.5 / 0.5))  # ... the rest scaled up, as F.dropout


def test_h_u_is_one_vector_whatever_the_batch_and_repeats():
    tower = _tower().eval()
    alone = tower(torch.tensor([1, 2]), torch.tensor([0, 0]), 1)
    batched = tower(torch.tensor([4, 1, 2, 2, 9]), torch.tensor([0, 1, 1, 1, 2]), 3)
    assert alone.shape == (1, 4) and torch.allclose(batched[1], alone[0], atol=1e-6)


def test_kl_is_the_monte_carlo_kl_against_the_composite_prior():
    tower = _tower()
    seq, rows = torch.tensor([1, 2, 3, 8]), torch.tensor([0, 0, 1, 1])
    torch.nn.init.normal_(tower.prior_encoder.mu.weight)  # q_old differs from q, as after an epoch of training
    torch.manual_seed(5)
    z, kl = tower.sample(seq, rows, 2)
    # the same draw by hand: dropout mask first, then the noise
    torch.manual_seed(5)
    mu, logvar = tower.encoder(*tower.bags(seq, rows, 2, tower.dropout))
    assert torch.allclose(z, mu + torch.randn_like(mu) * (0.5 * logvar).exp())
    old_mu, old_logvar = tower.prior_encoder(*tower.bags(seq, rows, 2, 0.0))
    d = torch.distributions
    mix = d.MixtureSameFamily(
        d.Categorical(torch.tensor([3 / 20, 3 / 4, 1 / 10])),
        d.Normal(torch.stack([torch.zeros_like(z), old_mu, torch.zeros_like(z)], -1),
                 torch.stack([torch.ones_like(z), (0.5 * old_logvar).exp(), torch.full_like(z, np.exp(5.0))], -1)))
    expected = (d.Normal(mu, (0.5 * logvar).exp()).log_prob(z) - mix.log_prob(z)).sum(-1)
    assert kl.shape == (2,) and torch.allclose(kl, expected, atol=1e-5)
    assert torch.allclose(log_normal(z, mu, logvar), d.Normal(mu, (0.5 * logvar).exp()).log_prob(z), atol=1e-6)


def test_prior_is_a_frozen_copy_refreshed_on_request():
    tower = _tower()
    assert not any(p.requires_grad for p in tower.prior_encoder.parameters())
    assert any(k.startswith("prior_encoder.") for k in tower.state_dict())  # saved and resumed with the weights
    with torch.no_grad():
        tower.encoder.mu.weight.add_(1.0)
    assert not torch.equal(tower.encoder.mu.weight, tower.prior_encoder.mu.weight)
    tower.refresh_prior()
    assert torch.equal(tower.encoder.mu.weight, tower.prior_encoder.mu.weight)


def test_variational_tower_learns_categories_and_serves_through_hnswlib(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    report = train_towers(con, tmp_path / "m", TowerConfig(**{**VAE, "epochs": 40, "patience": 40,
                                                               "eval_every": 10}))
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    model = load_model(tmp_path / "m")
    assert model.net.vae_tower is not None  # type: ignore[union-attr]
    split = load_split(con, "recbole")
    assert top_item_in_own_category(score_all(model, split), split) > 0.7
    assert_hnsw_serves_like_exact(model)

@pytest.mark.parametrize("passes", [3, 0])
def test_variational_tower_resumes_like_uninterrupted(tmp_path: Path, passes: int):
    # dropout masks and posterior samples come from the per-epoch torch seed; q_old is in the checkpoint
    assert_resumes_like_uninterrupted(make_shop_db(tmp_path / "shop.duckdb"), tmp_path,
                                      {**VAE, "epochs": 3, "encoder_passes": passes}, kill_at=2)


def test_alternating_passes_train_the_user_tower_then_the_item_table(tmp_path: Path):
    con = make_shop_db(tmp_path / "shop.duckdb")
    split = ensure_split(con, "recbole")
    feats, behaviors, _ = build_features(con, split)
    cfg = TowerConfig(**{**VAE, "encoder_passes": 2})
    torch.manual_seed(0)
    net = build_net(TowerShapes(split.n_users, feats.field_sizes(), list(behaviors)), asdict(cfg))
    assert isinstance(net, TAR) and net.vae_tower is not None
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    batches = epoch_batches(net, feats, cfg, epoch=1)
    per_pass = -(-split.n_users // cfg.batch_size)
    assert batches.total == 3 * split.n_users
    moved = []
    for loss, _ in batches.steps:
        items, enc = net.item_tower.emb[0].weight.clone(), net.vae_tower.encoder.mu.weight.clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
        moved.append((not torch.equal(items, net.item_tower.emb[0].weight),
                      not torch.equal(enc, net.vae_tower.encoder.mu.weight)))
    assert moved == [(False, True)] * (2 * per_pass) + [(True, False)] * per_pass
    # q_old was refreshed before the item pass, which left the encoder as it was
    assert torch.equal(net.vae_tower.prior_encoder.mu.weight, net.vae_tower.encoder.mu.weight)


@pytest.mark.parametrize(("change", "message"), [({"batching": "pairs"}, "--batching users"),
                                                 ({"normalize": True}, "--no-normalize"),
                                                 ({"user_tower": "pooled", "normalize": True}, "--item-bias")])
def test_variational_tower_config_errors(change: dict, message: str):
    with pytest.raises(ValueError, match=message):
        check_config(TowerConfig(**{**VAE, **change}))


def test_item_bias_is_one_more_coordinate_of_every_vector():
    torch.manual_seed(0)
    shapes = TowerShapes(n_users=3, item_field_sizes=[10], behaviors=["click"], vocab_size=5)
    net = TAR(shapes, dim=4, normalize=False, item_features=False, user_tower="variational", hidden_dim=6,
              n_layers=2, item_bias=True).eval()
    with torch.no_grad():
        net.item_bias.weight.copy_(torch.arange(10.0)[:, None])  # type: ignore[union-attr]
    feats = torch.arange(10)[:, None]
    h_v = net.items(feats)
    h_u = net.users(torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([0, 0]), torch.tensor([0, 0]), feats)
    h_t = net.tags(torch.tensor([[2, 3]]))
    assert h_v.shape == (10, 5) and h_u.shape == (1, 5) and h_t.shape == (1, 5) and net.out_dim == 5
    mu = net.vae_tower(torch.tensor([1, 2]), torch.tensor([0, 0]), 1)  # type: ignore[misc]
    assert torch.allclose(h_u @ h_v.T, mu @ net.item_tower(feats).T + torch.arange(10.0))  # y = mu . h_v + b_v
    assert h_u[0, -1] == 1.0 and h_t[0, -1] == 0.0  # a tag's query ignores the popularity offset
