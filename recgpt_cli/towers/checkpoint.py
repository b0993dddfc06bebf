"""Checkpoints of a training run: written atomically after every epoch, resumed only by the same configuration.

DIR/checkpoint.pt holds the last finished epoch (weights, optimiser, history, early-stopping state, seconds);
DIR/model.pt the best weights so far. A kill at any moment leaves one of the two complete files, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from recgpt_cli.splits import SplitData
from recgpt_cli.towers.config import RUN_FIELDS, TowerConfig, option_name, with_defaults
from recgpt_cli.towers.data import TowerFeatures


@dataclass
class RunState:
    """Where a run stands after `epoch` (0 = nothing trained yet)."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_ndcg: float = -1.0
    done: bool = False  # early-stopped
    seconds: float = 0.0  # time in epochs, summed over every (resumed) run


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def learned_config(cfg: TowerConfig) -> dict[str, Any]:
    """The fields that change what is learned: a checkpoint is resumed only when all of them match."""
    return {k: v for k, v in asdict(cfg).items() if k not in RUN_FIELDS}


def resumable_features(out: Path, cfg: TowerConfig, split: SplitData) -> tuple[TowerFeatures, list[str],
                                                                               dict[str, int]] | str | None:
    """The saved features, behaviours and vocabulary of a run in `out` that `cfg` may continue; else why the
    checkpoint there cannot be continued, or None when there is none (or `cfg.resume` is off)."""
    ckpt, cfg_path = out / "checkpoint.pt", out / "config.json"
    if not (cfg.resume and ckpt.exists() and cfg_path.exists()):
        return None
    saved = with_defaults(json.loads(cfg_path.read_text()))
    changed = [k for k, v in learned_config(cfg).items() if saved[k] != v]
    if changed:
        return "it was trained with another " + ", ".join(f"--{option_name(k)}" for k in changed[:4])
    if saved.get("split_fingerprint") not in (None, split.fingerprint()):
        return "the split was rebuilt since, so it learned from other train rows"
    feats = TowerFeatures.load(out / "features.npz")
    if (len(feats.item_feats), len(feats.seq_indptr) - 1, len(feats.train_user)) != (
            split.n_items, split.n_users, len(split.train)):
        return "it belongs to another dataset (the split was rebuilt since, on new data)"
    return feats, list(saved["shapes"]["behaviors"]), json.loads((out / "vocab.json").read_text())


def save_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, state: RunState) -> None:
    save_atomic({"model": net.state_dict(), "optimizer": opt.state_dict(), **asdict(state)}, path)


def load_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer) -> RunState:
    saved = torch.load(path, map_location=next(net.parameters()).device, weights_only=False)
    net.load_state_dict(saved.pop("model"))
    opt.load_state_dict(saved.pop("optimizer"))
    return RunState(**{k: saved[k] for k in ("epoch", "history", "best_epoch", "best_ndcg", "done")},
                    seconds=saved.get("seconds", 0.0))
