"""Training loop for TAR (§2.3.2): L_TAR = L_col + alpha*L_tag + (1-alpha)*L_cate over the TRAIN split.

Seeded end to end (weights from torch.manual_seed(seed), batches/negatives from numpy rng(seed, epoch)), early
stopping on validation NDCG@10 (full ranking, train items masked), a checkpoint after every epoch; a rerun after a
kill resumes from the last finished epoch and ends where an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from recgpt_cli.splits import SplitData, load_split, make_split, split_info
from recgpt_cli.towers.data import TowerFeatures, build_features, gather_sequences
from recgpt_cli.towers.losses import info_nce, l_cate, l_tar
from recgpt_cli.towers.model import TAR, TAREnsemble, TowerShapes
from recgpt_cli.towers.saved import TowerModel, load_model, pick_device, write_static

# Config keys that change what is learned: a checkpoint made with other values is not resumed.
_RESUME_KEYS = ("protocol", "dim", "alpha", "lr", "batch_size", "seed", "n_negatives", "temperature",
                "logq", "in_batch", "pooling", "normalize", "max_seq_len", "n_levels", "n_buckets", "weight_decay",
                "tag_weight", "use_user_id", "history_dropout",
                "item_id_residual", "batching", "lr_schedule", "history_embedding",
                "loss_weighting")


@dataclass
class TowerConfig:
    """Plain training settings (nanoGPT-style): every field is a CLI option of `recgpt train-towers`."""

    protocol: str = "recbole"
    split_seed: int = 2020  # used only when the DB has no stored split for `protocol` yet
    epochs: int = 30
    dim: int = 64
    alpha: float = 0.5  # L_tag vs L_cate balance (§2.3.2)
    tag_weight: float = 1.0  # weight of L_sem = alpha*L_tag + (1-alpha)*L_cate next to L_col (paper: 1)
    lr: float = 5e-3
    weight_decay: float = 0.0
    batch_size: int = 512
    n_negatives: int = 256  # random negatives per batch; >= n_items means every item (full softmax)
    in_batch: bool = True  # also use the batch's other positives as negatives (popularity-distributed)
    temperature: float = 0.1
    logq: bool = False  # logQ correction of sampled-softmax popularity bias
    pooling: str = "mean"  # user-tower behaviour pooling: "mean" (paper) or "attention"
    use_user_id: bool = True  # EMB(user id) in the user tower (paper); False = history-only user tower
    item_id_residual: bool = False  # h_v = EMB(item id) + DNN(features) instead of DNN alone
    history_dropout: float = 0.0  # share of sequence entries hidden per training step (0 = paper)
    # "pairs" (paper): one row per engaged (user, item), the target left out of the history. "users": one row per
    # user, history_dropout hides part of the history and the softmax must find ALL the user's train items
    # (multi-positive, Mult-DAE style); batch_size then counts users, and an epoch costs one user-tower pass per user.
    batching: str = "pairs"
    # "users" batching only: "user" = each user's loss is the mean over its items (every user counts the same);
    # "pair" = every engaged pair counts the same (heavy users weigh more, as with "pairs" batching)
    loss_weighting: str = "user"
    lr_schedule: str = "constant"  # or "cosine": lr decays to 0 over `epochs` (set per epoch, so resume-safe)
    eval_every: int = 1  # validate (and maybe early-stop) every N epochs; patience counts epochs
    history_embedding: str = "tower"  # history items as item-tower outputs (paper) or "separate" id embeddings
    ensemble: int = 1  # K > 1: train K members (seeds seed..seed+K-1) and serve their averaged cosine scores
    normalize: bool = True  # unit-length tower outputs
    max_seq_len: int = 200
    n_levels: int = 3
    n_buckets: int = 10
    seed: int = 0
    patience: int = 3
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default (one per core)
    resume: bool = True


@dataclass
class TrainReport:
    out_dir: str
    epochs_run: int  # summed over ensemble members
    best_epoch: int
    best_valid_ndcg10: float
    resumed_from_epoch: int
    n_train: int
    seconds: float  # time spent in epochs, summed over every (resumed) run
    wall_seconds: float  # this call, including split and features
    history: list[dict[str, float]] = field(default_factory=list)
    members: list[TrainReport] = field(default_factory=list)  # one report per ensemble member


def _category_sampler(item_cat: np.ndarray) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Sample, for each item, another item of the same finest category (itself when it is alone)."""
    order = np.argsort(item_cat, kind="stable")
    start = np.searchsorted(item_cat[order], item_cat, side="left")
    count = np.searchsorted(item_cat[order], item_cat, side="right") - start

    def sample(items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pick = order[start[items] + (rng.random(len(items)) * count[items]).astype(np.int64)]
        again = order[start[items] + (rng.random(len(items)) * count[items]).astype(np.int64)]
        return np.where(pick == items, again, pick)  # a second draw makes "the item itself" rare

    return sample


def validate_ndcg10(model: TowerModel, split: SplitData) -> float:
    """Mean NDCG@10 over users with validation items; full ranking with train items masked (RecBole's definition)."""
    users = np.unique(split.valid.user)
    if len(users) == 0:
        return 0.0
    scores = model.user_vectors(users).cpu() @ model.item_vectors().cpu().T
    indptr, items = split.user_items("train")
    rows = np.repeat(np.arange(len(users)), indptr[users + 1] - indptr[users])
    cols = np.concatenate([items[indptr[u] : indptr[u + 1]] for u in users])
    scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
    top = scores.topk(min(10, scores.shape[1]), dim=1).indices.numpy()
    vptr, vitems = split.user_items("valid")
    discount = 1.0 / np.log2(np.arange(2, 12))
    total = 0.0
    for r, u in enumerate(users):
        truth = set(vitems[vptr[u] : vptr[u + 1]].tolist())
        hits = np.array([t in truth for t in top[r]], dtype=float)
        total += float((hits * discount[: len(hits)]).sum() / discount[: min(len(truth), 10)].sum())
    return total / len(users)


class _EpochMeter:
    """Optimiser step + running mean loss + rich progress (rows/s) for one epoch."""

    def __init__(self, progress: Progress | None, epoch: int, total: int, unit: str) -> None:
        self.progress, self.epoch, self.unit = progress, epoch, unit
        self.task = progress.add_task(f"epoch {epoch}", total=total) if progress else None
        self.t0, self.seen, self.loss_sum, self.n_batches = time.perf_counter(), 0, 0.0, 0

    def step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, rows: int) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()
        self.seen += rows
        self.loss_sum += float(loss.detach())
        self.n_batches += 1
        if self.progress is not None and self.task is not None:
            rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
            self.progress.update(self.task, advance=rows, description=f"epoch {self.epoch} loss "
                                 f"{self.loss_sum / self.n_batches:.3f} {rate:,.0f} {self.unit}/s")

    def finish(self) -> float:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
        return self.loss_sum / max(self.n_batches, 1)


def _epoch(
    model: TowerModel, opt: torch.optim.Optimizer, cfg: TowerConfig, epoch: int, progress: Progress | None
) -> float:
    net, feats, dev = model.net, model.feats, model.device
    assert isinstance(net, TAR)  # members are trained one at a time
    net.train()
    rng = np.random.default_rng([cfg.seed, epoch])
    item_feats = torch.as_tensor(feats.item_feats, device=dev)
    n_items, n_pairs = len(feats.item_feats), len(feats.train_user)
    same_cat = _category_sampler(feats.item_cat)
    pop = np.bincount(feats.train_item, minlength=n_items) / max(n_pairs, 1)
    perm = rng.permutation(n_pairs)
    meter = _EpochMeter(progress, epoch, n_pairs, "samples")
    for i in range(0, n_pairs, cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        u, v = feats.train_user[idx], feats.train_item[idx]
        negs = np.arange(n_items) if cfg.n_negatives >= n_items else rng.integers(0, n_items, cfg.n_negatives)
        row, seq_item, seq_beh = gather_sequences(feats, u)
        keep = seq_item != v[row]  # leave the target out of its own user's sequences
        if cfg.history_dropout > 0:  # hide part of the history each step, so no single item carries a user
            keep &= rng.random(len(seq_item)) >= cfg.history_dropout
        t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        h_u = net.users(t(u), t(seq_item[keep]), t(row[keep]), t(seq_beh[keep]), item_feats)
        h_v = net.items(item_feats[t(v)])
        h_neg = net.items(item_feats[t(negs)])
        kw: dict[str, Any] = {"pos_ids": t(v), "neg_ids": t(negs), "temperature": cfg.temperature,
                              "in_batch": cfg.in_batch}
        if cfg.logq:
            # log of each candidate's expected count in the sample: in-batch ~ popularity, random ~ uniform
            kw["log_q_pos"] = t(np.log(len(idx) * pop[v])).float()
            kw["log_q_neg"] = torch.full((len(negs),), math.log(len(negs) / n_items), device=dev)
        loss_col = info_nce(h_u, h_v, h_neg, **kw)
        loss_sem = _semantic_loss(net, feats, v, h_v, h_neg, negs, cfg, rng, same_cat, item_feats,
                                  in_batch=cfg.in_batch)
        loss = loss_col + cfg.tag_weight * (l_tar(loss_col, *loss_sem, cfg.alpha) - loss_col)
        meter.step(opt, loss, len(idx))
    return meter.finish()


def _semantic_loss(
    net: TAR, feats: TowerFeatures, v: np.ndarray, h_v: torch.Tensor, h_neg: torch.Tensor, negs: np.ndarray,
    cfg: TowerConfig, rng: np.random.Generator, same_cat: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    item_feats: torch.Tensor, *, in_batch: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_tag, L_cate) for engaged items `v` (vectors h_v) against candidate items `negs` (vectors h_neg)."""
    dev = h_v.device
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    # The tag of an engaged item: its title or its category path (§2.3.2 "tags of clicked items").
    has_cat_text = (feats.cat_tokens[v] > 0).any(axis=1)
    use_cat = np.logical_and(rng.random(len(v)) < 0.5, has_cat_text)
    tokens = np.where(use_cat[:, None], feats.cat_tokens[v], feats.title_tokens[v])
    h_t = net.tags(t(tokens))
    loss_tag = info_nce(h_t, h_v, h_neg, pos_ids=t(v), neg_ids=t(negs), temperature=cfg.temperature,
                        in_batch=in_batch)
    with_cat = feats.item_cat[v] > 0
    if not with_cat.any():
        return loss_tag, torch.zeros((), device=dev)
    v_plus = same_cat(v[with_cat], rng)
    loss_cate = l_cate(h_t[t(with_cat)], net.items(item_feats[t(v_plus)]), h_neg, t(feats.item_cat[v[with_cat]]),
                       t(feats.item_cat[negs]), temperature=cfg.temperature)
    return loss_tag, loss_cate


_TAG_ROWS = 512  # engaged items per step that also train L_tag / L_cate in "users" batching


def _epoch_users(
    model: TowerModel, opt: torch.optim.Optimizer, cfg: TowerConfig, epoch: int, progress: Progress | None
) -> float:
    """One pass over users ("users" batching): each user's masked history must rank all of its train items.

    L_col is the multinomial log-likelihood of the user's train items under a softmax over the candidates (every
    item when n_negatives >= n_items, else the batch's positives plus n_negatives random items), averaged per user,
    so heavy users do not dominate the gradient the way they do with one row per pair (loss_weighting "pair" lets
    them: a mean over the batch's pairs).
    """
    net, feats, dev = model.net, model.feats, model.device
    assert isinstance(net, TAR)  # members are trained one at a time
    net.train()
    rng = np.random.default_rng([cfg.seed, epoch])
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    item_feats = t(feats.item_feats)
    n_items, n_users = len(feats.item_feats), len(feats.seq_indptr) - 1
    same_cat = _category_sampler(feats.item_cat)
    order = np.argsort(feats.train_user, kind="stable")
    pos_items = feats.train_item[order]
    pos_ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(feats.train_user, minlength=n_users), out=pos_ptr[1:])
    users = rng.permutation(np.flatnonzero(np.diff(pos_ptr) > 0))
    meter = _EpochMeter(progress, epoch, len(users), "users")
    for i in range(0, len(users), cfg.batch_size):
        u = users[i : i + cfg.batch_size]
        row, seq_item, seq_beh = gather_sequences(feats, u)
        keep = rng.random(len(seq_item)) >= cfg.history_dropout
        h_u = net.users(t(u), t(seq_item[keep]), t(row[keep]), t(seq_beh[keep]), item_feats)
        n_pos = pos_ptr[u + 1] - pos_ptr[u]
        p_row = np.repeat(np.arange(len(u)), n_pos)
        offsets = np.arange(n_pos.sum()) - np.repeat(np.cumsum(n_pos) - n_pos, n_pos)
        p_item = pos_items[np.repeat(pos_ptr[u], n_pos) + offsets]
        if cfg.n_negatives >= n_items:
            cand = np.arange(n_items)
        else:
            cand = np.unique(np.concatenate([p_item, rng.integers(0, n_items, cfg.n_negatives)]))
        h_c = net.items(item_feats[t(cand)])
        p_col = np.searchsorted(cand, p_item)
        logp = torch.log_softmax(h_u @ h_c.T / cfg.temperature, dim=1)
        if cfg.loss_weighting == "pair":
            loss_col = -logp[t(p_row), t(p_col)].mean()
        else:
            loss_col = -(logp[t(p_row), t(p_col)] / t(n_pos[p_row]).float()).sum() / len(u)
        loss = loss_col
        if cfg.tag_weight > 0:
            pick = rng.choice(len(p_item), size=min(_TAG_ROWS, len(p_item)), replace=False)
            loss_sem = _semantic_loss(net, feats, p_item[pick], h_c[t(p_col[pick])], h_c, cand, cfg, rng, same_cat,
                                      item_feats, in_batch=False)  # the candidates already hold the batch's positives
            loss = loss_col + cfg.tag_weight * (l_tar(loss_col, *loss_sem, cfg.alpha) - loss_col)
        meter.step(opt, loss, len(u))
    return meter.finish()


def _lr_at(cfg: TowerConfig, epoch: int) -> float:
    """Learning rate for `epoch` (1-based); cosine decays from lr towards 0 at epoch == cfg.epochs."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(cfg.epochs, 1)))
    return cfg.lr


def check_config(cfg: TowerConfig) -> None:
    """Reject settings that cannot work before any data is read; messages name the `train-towers` option."""
    choices = {"batching": ("pairs", "users"), "lr_schedule": ("constant", "cosine"), "pooling": ("mean", "attention"),
               "loss_weighting": ("user", "pair"), "history_embedding": ("tower", "separate")}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: expected {' or '.join(allowed)}")
    if cfg.batching == "users" and cfg.logq:
        raise ValueError("--logq corrects per-pair sampled negatives: use it with --batching pairs")
    for name in ("eval_every", "patience", "ensemble"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 1")


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train_towers(
    con: duckdb.DuckDBPyConnection,
    out_dir: str | Path,
    config: TowerConfig | None = None,
    *,
    console: Console | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> TrainReport:
    """Train TAR on the TRAIN split of `config.protocol` (made here if missing, §2.3.2) and save it in `out_dir`.

    Rerunning with the same config resumes from DIR/checkpoint.pt (config.resume). `console` receives progress
    (None = silent); `after_epoch(epoch)` is called after each checkpoint (tests use it to simulate a kill).
    """
    cfg = config or TowerConfig()
    check_config(cfg)
    if cfg.ensemble > 1:
        return _train_ensemble(con, Path(out_dir), cfg, console, after_epoch)
    out = Path(out_dir)
    started = time.perf_counter()
    stored = split_info(con, cfg.protocol)
    # reuse a stored split whatever its seed (evaluate/baselines share it); make_split still checks it is current
    make_split(con, cfg.protocol, seed=stored.seed if stored else cfg.split_seed,
               ratios=stored.ratios if stored else (0.8, 0.1, 0.1))
    split = load_split(con, cfg.protocol)
    ckpt_path, cfg_path = out / "checkpoint.pt", out / "config.json"
    saved_cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else None
    resumable = (cfg.resume and ckpt_path.exists() and saved_cfg is not None
                 and all(saved_cfg.get(k) == getattr(cfg, k) for k in _RESUME_KEYS))
    if resumable:
        feats = TowerFeatures.load(out / "features.npz")
        behaviors = saved_cfg["shapes"]["behaviors"]  # type: ignore[index]
        vocab = json.loads((out / "vocab.json").read_text())
        # the split was rebuilt since (new data): the checkpoint belongs to another dataset, start over
        resumable = (len(feats.item_feats), len(feats.seq_indptr) - 1, len(feats.train_user)) == (
            split.n_items, split.n_users, len(split.train))
    if not resumable:
        for stale in (ckpt_path, out / "model.pt"):
            stale.unlink(missing_ok=True)  # never resume a later run from another config's weights
        feats, behaviors, vocab = build_features(
            con, split, n_levels=cfg.n_levels, n_buckets=cfg.n_buckets, max_seq_len=cfg.max_seq_len)
    shapes = TowerShapes(split.n_users, feats.field_sizes(), list(behaviors), len(vocab) + 2)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dev = pick_device(cfg.device)
    net = TAR(shapes, dim=cfg.dim, pooling=cfg.pooling, normalize=cfg.normalize, use_user_id=cfg.use_user_id,
              item_id_residual=cfg.item_id_residual, history_embedding=cfg.history_embedding).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    config_dict = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "threads")}
    model = TowerModel(net, feats, split.user_ids, split.item_ids, vocab, config_dict, out)
    history: list[dict[str, float]] = []
    best_epoch, best_ndcg, start_epoch, done, train_seconds = 0, -1.0, 1, False, 0.0
    if resumable:
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, best_epoch, best_ndcg, done = state["history"], state["best_epoch"], state["best_ndcg"], state["done"]
        start_epoch = state["epoch"] + 1
        train_seconds = state.get("seconds", 0.0)
        if console:
            console.print(f"resuming {out} after epoch {state['epoch']} (best NDCG@10 {best_ndcg:.4f} @ {best_epoch})")
    else:
        write_static(out, model)
    resumed_from = start_epoch - 1
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console,
                        transient=True, disable=console is None)
    with progress:
        for epoch in range(start_epoch, cfg.epochs + 1):
            if done:
                break
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, epoch)
            run_epoch = _epoch_users if cfg.batching == "users" else _epoch
            loss = run_epoch(model, opt, cfg, epoch, progress if console else None)
            entry = {"epoch": epoch, "loss": loss}
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                ndcg = entry["valid_ndcg@10"] = validate_ndcg10(model, split)
                if ndcg > best_ndcg:
                    best_epoch, best_ndcg = epoch, ndcg
                    _save_atomic(net.state_dict(), out / "model.pt")
            train_seconds += time.perf_counter() - t0
            history.append(entry)
            done = epoch - best_epoch >= cfg.patience  # early stop; a rerun with more --epochs continues otherwise
            _save_atomic({"epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(), "history": history,
                          "best_epoch": best_epoch, "best_ndcg": best_ndcg, "done": done, "seconds": train_seconds},
                         ckpt_path)
            if console and "valid_ndcg@10" in entry:
                console.print(f"epoch {epoch}: loss {loss:.4f}  valid NDCG@10 {entry['valid_ndcg@10']:.4f}"
                              + ("  (best)" if best_epoch == epoch else ""))
            if after_epoch is not None:
                after_epoch(epoch)
    return TrainReport(str(out), len(history), best_epoch, best_ndcg, resumed_from, len(feats.train_user),
                       train_seconds, time.perf_counter() - started, history)


def _train_ensemble(
    con: duckdb.DuckDBPyConnection, out: Path, cfg: TowerConfig, console: Console | None,
    after_epoch: Callable[[int], None] | None,
) -> TrainReport:
    """Train cfg.ensemble members into out/member-K (each resumable on its own), then save them as one model."""
    started = time.perf_counter()
    reports: list[TrainReport] = []
    for k in range(cfg.ensemble):
        member = replace(cfg, ensemble=1, seed=cfg.seed + k)
        if console:
            console.print(f"ensemble member {k + 1}/{cfg.ensemble} (seed {member.seed})")
        reports.append(train_towers(con, out / f"member-{k}", member, console=console, after_epoch=after_epoch))
    dev = pick_device(cfg.device)
    members = [load_model(out / f"member-{k}", device=str(dev)) for k in range(cfg.ensemble)]
    net = TAREnsemble([m.net for m in members if isinstance(m.net, TAR)]).eval()
    config_dict = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "threads")}
    first = members[0]
    model = TowerModel(net, first.feats, first.user_ids, first.item_ids, first.vocab, config_dict, out)
    write_static(out, model)
    _save_atomic(net.state_dict(), out / "model.pt")
    ndcg = validate_ndcg10(model, load_split(con, cfg.protocol))
    if console:
        console.print(f"ensemble of {cfg.ensemble}: valid NDCG@10 {ndcg:.4f} (members "
                      + ", ".join(f"{r.best_valid_ndcg10:.4f}" for r in reports) + ")")
    return TrainReport(str(out), sum(r.epochs_run for r in reports), max(r.best_epoch for r in reports), ndcg,
                       min(r.resumed_from_epoch for r in reports), reports[0].n_train,
                       sum(r.seconds for r in reports), time.perf_counter() - started, [], reports)
