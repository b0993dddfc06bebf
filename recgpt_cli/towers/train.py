"""Training loop for TAR (§2.3.2) over the TRAIN split, top to bottom.

Seeded end to end (weights from torch.manual_seed(seed), batches and negatives from numpy rng(seed, epoch), dropout
from a torch seed per epoch), early
stopping on validation NDCG@10 (metrics.py, full ranking, train items masked), a checkpoint after every epoch; a
rerun after a kill resumes from the last finished epoch and ends where an uninterrupted run would. How an epoch is
cut into batches: batches.py; checkpoints: checkpoint.py; ensembles: ensemble.py; settings: config.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import duckdb
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from recgpt_cli.errors import BadInput
from recgpt_cli.metrics import compute_metrics, full_rank_topk
from recgpt_cli.splits import SplitData, load_split, make_split, split_info
from recgpt_cli.towers.batches import Epoch, epoch_batches
from recgpt_cli.towers.checkpoint import RunState, load_checkpoint, resumable_features, save_atomic, save_checkpoint
from recgpt_cli.towers.config import TowerConfig, check_config
from recgpt_cli.towers.data import build_features
from recgpt_cli.towers.ensemble import train_ensemble
from recgpt_cli.towers.model import TAR, TowerShapes
from recgpt_cli.towers.saved import UNFINISHED, TowerModel, build_net, pick_device, write_static


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


def validate_ndcg10(model: TowerModel, split: SplitData) -> float:
    """Validation NDCG@10 (metrics.py's definition): full ranking of every item, train items masked."""
    users = np.unique(split.valid.user)
    if len(users) == 0:
        return 0.0
    topk = np.full((split.n_users, 10), -1, dtype=np.int64)
    scores = model.user_vectors(users).cpu() @ model.item_vectors().cpu().T
    topk[users] = full_rank_topk(scores, split.exclude_for("valid"), 10, rows=users)
    return float(compute_metrics(topk, split, "valid", ks=(10,))["ndcg@10"])


def lr_at(cfg: TowerConfig, epoch: int) -> float:
    """Learning rate for `epoch` (1-based); cosine decays from lr towards 0 at epoch == cfg.epochs."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(cfg.epochs, 1)))
    return cfg.lr


class EpochMeter:
    """Running mean loss + rich progress (rows/s) for one epoch."""

    def __init__(self, progress: Progress | None, epoch: int, batches: Epoch) -> None:
        self.progress, self.epoch, self.unit = progress, epoch, batches.unit
        self.task = progress.add_task(f"epoch {epoch}", total=batches.total) if progress else None
        self.t0, self.seen, self.loss_sum, self.n_batches = time.perf_counter(), 0, 0.0, 0

    def add(self, loss: float, rows: int) -> None:
        self.seen, self.loss_sum, self.n_batches = self.seen + rows, self.loss_sum + loss, self.n_batches + 1
        if self.progress is not None and self.task is not None:
            rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
            self.progress.update(self.task, advance=rows, description=f"epoch {self.epoch} loss "
                                 f"{self.loss_sum / self.n_batches:.3f} {rate:,.0f} {self.unit}/s")

    def finish(self) -> float:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
        return self.loss_sum / max(self.n_batches, 1)


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
    out, started = Path(out_dir), time.perf_counter()
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out-dir {out}: is a file, not a folder", "give a folder for the model")
    # 1. the split: a stored one whatever its seed (evaluate and the baselines share it); make_split checks it
    stored = split_info(con, cfg.protocol)
    if stored is not None and cfg.protocol == "recbole":
        cfg = replace(cfg, split_seed=stored.seed)  # config.json says which split the model saw
    make_split(con, cfg.protocol, seed=cfg.split_seed, ratios=stored.ratios if stored else (0.8, 0.1, 0.1))
    split = load_split(con, cfg.protocol)
    if cfg.ensemble > 1:
        reports, ndcg = train_ensemble(con, out, cfg, train_towers, console, after_epoch,
                                       lambda m: validate_ndcg10(m, split))
        return TrainReport(str(out), sum(r.epochs_run for r in reports), max(r.best_epoch for r in reports), ndcg,
                           min(r.resumed_from_epoch for r in reports), reports[0].n_train,
                           sum(r.seconds for r in reports), time.perf_counter() - started, [], reports)

    # 2. features (saved ones when resuming) and the towers
    ckpt_path = out / "checkpoint.pt"
    saved = resumable_features(out, cfg, split)
    if isinstance(saved, str):  # said, not silent: the rerun someone expected to resume starts over
        if console:
            console.print(f"not resuming {out}: {saved}; training from epoch 1")
        saved = None
    if saved is None:
        for stale in (ckpt_path, out / "model.pt"):
            stale.unlink(missing_ok=True)  # never resume a later run from another config's weights
    feats, behaviors, vocab = saved or build_features(con, split, n_levels=cfg.n_levels, n_buckets=cfg.n_buckets,
                                                      max_seq_len=cfg.max_seq_len)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    saved_config = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "threads")}
    saved_config["split_fingerprint"] = split.fingerprint()  # evaluate refuses to score it on another split
    net = build_net(TowerShapes(split.n_users, feats.field_sizes(), list(behaviors), len(vocab) + 2), saved_config)
    assert isinstance(net, TAR)
    net.to(pick_device(cfg.device))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model = TowerModel(net, feats, split.user_ids, split.item_ids, vocab, saved_config, out)

    # 3. where the run stands
    if saved is not None:
        state = load_checkpoint(ckpt_path, net, opt)
        if console:
            console.print(f"resuming {out} after epoch {state.epoch} "
                          f"(best NDCG@10 {state.best_ndcg:.4f} @ {state.best_epoch})")
    else:
        state = RunState()
    write_static(out, model)  # on a resume too: config.json then says this run's epochs and patience
    resumed_from = state.epoch
    # until the loop ends, model.pt is a best-so-far: load_model refuses a folder with this marker
    (out / UNFINISHED).write_text(f"training {out}: a rerun of the same train-towers command resumes it\n")

    # 4. the loop: train an epoch, validate every eval_every, keep the best weights, checkpoint, maybe stop
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console,
                        transient=True, disable=console is None)
    with progress:
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if state.done:
                break
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            net.train()
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout masks: per epoch, so a resumed epoch repeats
            batches = epoch_batches(net, feats, cfg, epoch)
            meter = EpochMeter(progress if console else None, epoch, batches)
            for loss, rows in batches.steps:
                opt.zero_grad()
                loss.backward()
                opt.step()
                meter.add(float(loss.detach()), rows)
            entry = {"epoch": epoch, "loss": meter.finish()}
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                entry["valid_ndcg@10"] = validate_ndcg10(model, split)
                if entry["valid_ndcg@10"] > state.best_ndcg:
                    state.best_epoch, state.best_ndcg = epoch, entry["valid_ndcg@10"]
                    save_atomic(net.state_dict(), out / "model.pt")
            entry["seconds"] = time.perf_counter() - t0
            state.seconds += entry["seconds"]
            state.epoch = epoch
            state.history.append(entry)
            state.done = epoch - state.best_epoch >= cfg.patience  # a rerun with more --epochs continues otherwise
            save_checkpoint(ckpt_path, net, opt, state)
            if console and "valid_ndcg@10" in entry:
                console.print(f"epoch {epoch}: loss {entry['loss']:.4f}  valid NDCG@10 {entry['valid_ndcg@10']:.4f}"
                              f"  {entry['seconds']:.1f}s" + ("  (best)" if state.best_epoch == epoch else ""))
            if after_epoch is not None:
                after_epoch(epoch)
    (out / UNFINISHED).unlink(missing_ok=True)
    return TrainReport(str(out), len(state.history), state.best_epoch, state.best_ndcg, resumed_from,
                       len(feats.train_user), state.seconds, time.perf_counter() - started, state.history)
