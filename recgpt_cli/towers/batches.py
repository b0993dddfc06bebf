"""How one training epoch of TAR is cut into optimiser steps: each batching yields the loss of every step.

- ``pairs`` (paper §2.3.2): a row per engaged (user, item) pair, the target left out of the user's history;
  L_col against in-batch and/or random negatives, plus the semantic losses L_tag / L_cate.
- ``users``: a row per user; part of its history hidden; a softmax over the candidates (every item with
  negatives "all") must find all of its train items (Mult-DAE's multinomial likelihood).
- ``next-item`` (sequential user tower): a row per user; the state at every position of its ordered history must
  find the next item under a full softmax (SASRec trained with cross-entropy).

All randomness comes from `rng` = numpy Generator(seed, epoch), so a resumed epoch repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from recgpt_cli.towers.config import TowerConfig
from recgpt_cli.towers.data import TowerFeatures, gather_sequences
from recgpt_cli.towers.losses import info_nce, l_cate, l_tar, softmax_nll
from recgpt_cli.towers.model import TAR, right_align

_TAG_ROWS = 512  # engaged items per step that also train L_tag / L_cate in "users" batching
Sampler = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass
class Epoch:
    """The steps of one epoch: `total` rows (pairs or users, named by `unit`), `steps` yields (loss, rows)."""

    total: int
    unit: str
    steps: Iterator[tuple[torch.Tensor, int]]


def epoch_batches(net: TAR, feats: TowerFeatures, cfg: TowerConfig, epoch: int) -> Epoch:
    """The batches of `epoch` under cfg.batching (pairs | users | next-item)."""
    rng = np.random.default_rng([cfg.seed, epoch])
    if cfg.batching == "pairs":
        return _pairs(net, feats, cfg, rng)
    if cfg.batching == "users":
        return _users(net, feats, cfg, rng)
    return _next_item(net, feats, cfg, rng)


def category_sampler(item_cat: np.ndarray) -> Sampler:
    """Sample, for each item, another item of the same finest category (itself when it is alone)."""
    order = np.argsort(item_cat, kind="stable")
    start = np.searchsorted(item_cat[order], item_cat, side="left")
    count = np.searchsorted(item_cat[order], item_cat, side="right") - start

    def sample(items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pick = order[start[items] + (rng.random(len(items)) * count[items]).astype(np.int64)]
        again = order[start[items] + (rng.random(len(items)) * count[items]).astype(np.int64)]
        return np.where(pick == items, again, pick)  # a second draw makes "the item itself" rare

    return sample


def _all_items(cfg: TowerConfig, n_items: int) -> bool:
    return cfg.n_negatives == "all" or int(cfg.n_negatives) >= n_items


def _pairs(net: TAR, feats: TowerFeatures, cfg: TowerConfig, rng: np.random.Generator) -> Epoch:
    dev = next(net.parameters()).device
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    item_feats = t(feats.item_feats)
    n_items, n_pairs = len(feats.item_feats), len(feats.train_user)
    same_cat = category_sampler(feats.item_cat)
    pop = np.bincount(feats.train_item, minlength=n_items) / max(n_pairs, 1)
    perm = rng.permutation(n_pairs)

    def steps() -> Iterator[tuple[torch.Tensor, int]]:
        for i in range(0, n_pairs, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            u, v = feats.train_user[idx], feats.train_item[idx]
            negs = np.arange(n_items) if _all_items(cfg, n_items) else rng.integers(0, n_items, int(cfg.n_negatives))
            row, seq_item, seq_beh = gather_sequences(feats, u)
            keep = seq_item != v[row]  # leave the target out of its own user's sequences
            if cfg.history_dropout > 0:  # hide part of the history each step, so no single item carries a user
                keep &= rng.random(len(seq_item)) >= cfg.history_dropout
            h_u = net.users(t(u), t(seq_item[keep]), t(row[keep]), t(seq_beh[keep]), item_feats)
            h_v = net.items(item_feats[t(v)])
            h_neg = net.items(item_feats[t(negs)])
            log_q: dict[str, torch.Tensor] = {}
            if cfg.logq:
                # log of each candidate's expected count in the sample: in-batch ~ popularity, random ~ uniform
                log_q = {"log_q_pos": t(np.log(len(idx) * pop[v])).float(),
                         "log_q_neg": torch.full((len(negs),), math.log(len(negs) / n_items), device=dev)}
            loss_col = info_nce(h_u, h_v, h_neg, pos_ids=t(v), neg_ids=t(negs), temperature=cfg.temperature,
                                in_batch=cfg.in_batch, **log_q)
            loss_tag, loss_cate = semantic_losses(net, feats, v, h_v, h_neg, negs, cfg, rng, same_cat,
                                                  in_batch=cfg.in_batch)
            yield l_tar(loss_col, loss_tag, loss_cate, cfg.alpha, cfg.tag_weight), len(idx)

    return Epoch(n_pairs, "samples", steps())


def semantic_losses(
    net: TAR, feats: TowerFeatures, v: np.ndarray, h_v: torch.Tensor, h_neg: torch.Tensor, negs: np.ndarray,
    cfg: TowerConfig, rng: np.random.Generator, same_cat: Sampler, *, in_batch: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_tag, L_cate) for engaged items `v` (vectors h_v) against candidate items `negs` (vectors h_neg)."""
    dev = h_v.device
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    zero = torch.zeros((), device=dev)
    if cfg.tag_weight == 0:
        return zero, zero
    item_feats = t(feats.item_feats)
    # The tag of an engaged item: its title or its category path (§2.3.2 "tags of clicked items").
    has_cat_text = (feats.cat_tokens[v] > 0).any(axis=1)
    use_cat = np.logical_and(rng.random(len(v)) < 0.5, has_cat_text)
    tokens = np.where(use_cat[:, None], feats.cat_tokens[v], feats.title_tokens[v])
    h_t = net.tags(t(tokens))
    loss_tag = info_nce(h_t, h_v, h_neg, pos_ids=t(v), neg_ids=t(negs), temperature=cfg.temperature,
                        in_batch=in_batch)
    with_cat = feats.item_cat[v] > 0
    if not with_cat.any():
        return loss_tag, zero
    v_plus = same_cat(v[with_cat], rng)
    loss_cate = l_cate(h_t[t(with_cat)], net.items(item_feats[t(v_plus)]), h_neg, t(feats.item_cat[v[with_cat]]),
                       t(feats.item_cat[negs]), temperature=cfg.temperature)
    return loss_tag, loss_cate


def _users(net: TAR, feats: TowerFeatures, cfg: TowerConfig, rng: np.random.Generator) -> Epoch:
    dev = next(net.parameters()).device
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    item_feats = t(feats.item_feats)
    n_items, n_users = len(feats.item_feats), len(feats.seq_indptr) - 1
    same_cat = category_sampler(feats.item_cat)
    order = np.argsort(feats.train_user, kind="stable")
    pos_items = feats.train_item[order]
    pos_ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(feats.train_user, minlength=n_users), out=pos_ptr[1:])
    users = rng.permutation(np.flatnonzero(np.diff(pos_ptr) > 0))
    # the variational tower alternates as RecVAE: encoder_passes passes train the user tower (item vectors held
    # still), q_old is refreshed, then one pass trains the item table (user samples without input dropout)
    vae = net.vae_tower
    passes = ["joint"] if vae is None or cfg.encoder_passes == 0 else ["user"] * cfg.encoder_passes + ["item"]

    def steps() -> Iterator[tuple[torch.Tensor, int]]:
        for k, phase in enumerate(passes):
            if phase == "item" and vae is not None:
                vae.refresh_prior()
            order_k = users if k == 0 else rng.permutation(users)
            yield from pass_steps(order_k, phase)
        if vae is not None and passes == ["joint"]:
            vae.refresh_prior()  # q_old: the encoder as this epoch left it

    def pass_steps(order_k: np.ndarray, phase: str) -> Iterator[tuple[torch.Tensor, int]]:
        for i in range(0, len(order_k), cfg.batch_size):
            u = order_k[i : i + cfg.batch_size]
            row, seq_item, seq_beh = gather_sequences(feats, u)
            n_pos = pos_ptr[u + 1] - pos_ptr[u]
            if vae is not None:  # h_u = a sample of q(z | x_u); the tower drops its own inputs
                with torch.set_grad_enabled(phase != "item"):
                    z, kl = vae.sample(t(seq_item), t(row), len(u), drop=phase != "item")
                h_u = net.query(z)
            else:
                keep = rng.random(len(seq_item)) >= cfg.history_dropout
                h_u = net.users(t(u), t(seq_item[keep]), t(row[keep]), t(seq_beh[keep]), item_feats)
            p_row = np.repeat(np.arange(len(u)), n_pos)
            offsets = np.arange(n_pos.sum()) - np.repeat(np.cumsum(n_pos) - n_pos, n_pos)
            p_item = pos_items[np.repeat(pos_ptr[u], n_pos) + offsets]
            if _all_items(cfg, n_items):
                cand = np.arange(n_items)
            else:
                cand = np.unique(np.concatenate([p_item, rng.integers(0, n_items, int(cfg.n_negatives))]))
            h_c = net.items(item_feats[t(cand)])
            if phase == "user":
                h_c = h_c.detach()  # Adam skips parameters without a gradient: the item table stays as it is
            p_col = np.searchsorted(cand, p_item)
            weights = (np.full(len(p_item), 1.0 / len(p_item)) if cfg.loss_weighting == "pair"
                       else 1.0 / (n_pos[p_row] * len(u)))
            loss_col = softmax_nll(h_u, h_c, t(p_row), t(p_col), t(weights).float(), cfg.temperature)
            if vae is not None and phase != "item":  # beta(x) = gamma*|x| times the weight of each of u's pairs
                pair_w = 1.0 / len(p_item) if cfg.loss_weighting == "pair" else 1.0 / (n_pos * len(u))
                loss_col = loss_col + cfg.kl_gamma * (kl * t(n_pos * pair_w).float()).sum()
            if cfg.tag_weight == 0:
                yield loss_col, len(u)
                continue
            pick = rng.choice(len(p_item), size=min(_TAG_ROWS, len(p_item)), replace=False)
            loss_tag, loss_cate = semantic_losses(net, feats, p_item[pick], h_c[t(p_col[pick])], h_c, cand, cfg,
                                                  rng, same_cat, in_batch=False)  # cand holds the positives already
            yield l_tar(loss_col, loss_tag, loss_cate, cfg.alpha, cfg.tag_weight), len(u)

    return Epoch(len(users) * len(passes), "users", steps())


def _next_item(net: TAR, feats: TowerFeatures, cfg: TowerConfig, rng: np.random.Generator) -> Epoch:
    """Every position of a user's ordered history predicts the entry after it, over every item (full softmax).

    Inputs are a row's entries but the last, targets its entries but the first; both right-aligned the same way
    (`right_align`), so the state in column c is scored against the target in column c."""
    dev = next(net.parameters()).device
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    item_feats = t(feats.item_feats)
    users = rng.permutation(np.flatnonzero(np.diff(feats.seq_indptr) >= 2))
    same_cat = category_sampler(feats.item_cat)
    all_items = t(np.arange(len(feats.item_feats)))

    def steps() -> Iterator[tuple[torch.Tensor, int]]:
        for i in range(0, len(users), cfg.batch_size):
            u = users[i : i + cfg.batch_size]
            row, seq_item, seq_beh = gather_sequences(feats, u)
            last = np.r_[row[1:] != row[:-1], True]  # a row's latest entry is only ever a target
            first = np.r_[True, row[1:] != row[:-1]]  # its earliest only ever an input
            states, _, valid = net.sequence_states(t(seq_item[~last]), t(row[~last]), t(seq_beh[~last]),
                                                   item_feats, len(u))
            keep, col, _ = right_align(t(row[~first]), len(u), states.shape[1])
            targets = torch.zeros(valid.shape, dtype=torch.long, device=dev)
            targets[t(row[~first])[keep], col] = t(seq_item[~first])[keep]
            h_q, h_c, target = net.query(states[valid]), net.items(item_feats[all_items]), targets[valid]
            weights = torch.full((len(h_q),), 1.0 / max(len(h_q), 1), device=dev)
            loss_col = softmax_nll(h_q, h_c, torch.arange(len(h_q), device=dev), target, weights, cfg.temperature)
            if cfg.tag_weight == 0:
                yield loss_col, len(u)
                continue
            v = target.cpu().numpy()[rng.choice(len(target), size=min(_TAG_ROWS, len(target)), replace=False)]
            loss_tag, loss_cate = semantic_losses(net, feats, v, h_c[t(v)], h_c, np.arange(len(h_c)), cfg, rng,
                                                  same_cat, in_batch=False)
            yield l_tar(loss_col, loss_tag, loss_cate, cfg.alpha, cfg.tag_weight), len(u)

    return Epoch(len(users), "users", steps())
