"""A trained TAR model directory and the vectors it serves (§2.3.3).

DIR/config.json      TowerConfig + shapes + behaviours (what `load_model` rebuilds the towers from)
DIR/model.pt         best weights (state_dict, early-stopping choice)
DIR/features.npz     item feature ids, train sequences/positives (TowerFeatures)
DIR/ids.json         user_ids / item_ids in index order;  DIR/vocab.json  tag words
DIR/checkpoint.pt    last finished epoch (weights, optimiser, history) for resuming
DIR/member-K/        with --ensemble K: each member's own model dir (its checkpoints); DIR/model.pt holds them all
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recgpt_cli import devices
from recgpt_cli.errors import BadInput
from recgpt_cli.splits import SplitData
from recgpt_cli.towers.config import with_defaults
from recgpt_cli.towers.data import TowerFeatures, encode, gather_sequences
from recgpt_cli.towers.model import TAR, TAREnsemble, TowerShapes


@dataclass
class TowerModel:
    """A loaded model: the towers plus the inputs they were trained on."""

    net: TAR | TAREnsemble
    feats: TowerFeatures
    user_ids: list[str]
    item_ids: list[str]
    vocab: dict[str, int]
    config: dict[str, Any]
    directory: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """h_v for every item, (n_items, dim)."""
        self.net.eval()
        feats = torch.as_tensor(self.feats.item_feats, device=self.device)
        return torch.cat([self.net.items(feats[i : i + 65536]) for i in range(0, len(feats), 65536)])

    @torch.no_grad()
    def user_vectors(self, users: np.ndarray | None = None, batch: int = 2048) -> torch.Tensor:
        """h_u for the given user indices (default all), from their TRAIN sequences, (n, dim)."""
        self.net.eval()
        users = np.arange(len(self.user_ids)) if users is None else np.asarray(users, dtype=np.int64)
        item_feats = torch.as_tensor(self.feats.item_feats, device=self.device)
        out = []
        for i in range(0, len(users), batch):
            part = users[i : i + batch]
            row, item, beh = (torch.as_tensor(a, device=self.device) for a in gather_sequences(self.feats, part))
            out.append(self.net.users(torch.as_tensor(part, device=self.device), item, row, beh, item_feats))
        dim = self.net.out_dim
        return torch.cat(out) if out else torch.zeros(0, dim)

    @torch.no_grad()
    def tag_vectors(self, texts: list[str]) -> torch.Tensor:
        """h_t for free-text tags (e.g. LLM-predicted), (n, dim)."""
        self.net.eval()
        return self.net.tags(torch.as_tensor(encode(texts, self.vocab), device=self.device))


def pick_device(name: str = "auto") -> torch.device:
    """CPU by default; CUDA when present and asked for (auto)."""
    return torch.device(devices.pick_device(name))


def write_static(directory: Path, model: TowerModel) -> None:
    """Everything but the weights; written once when training starts."""
    directory.mkdir(parents=True, exist_ok=True)
    model.feats.save(directory / "features.npz")
    (directory / "ids.json").write_text(json.dumps({"user_ids": model.user_ids, "item_ids": model.item_ids}))
    (directory / "vocab.json").write_text(json.dumps(model.vocab))
    shapes = asdict(model.net.shapes)
    (directory / "config.json").write_text(json.dumps({**model.config, "shapes": shapes}, indent=2))


def build_net(shapes: TowerShapes, config: dict[str, Any]) -> TAR | TAREnsemble:
    """The (untrained) module a saved config describes; `ensemble` > 1 = that many member TARs."""
    c = with_defaults(config)

    def one() -> TAR:
        return TAR(shapes, dim=c["dim"], pooling=c["pooling"], normalize=c["normalize"], use_user_id=c["use_user_id"],
                   item_id_residual=c["item_id_residual"], item_features=c["item_features"],
                   history_embedding=c["history_embedding"], user_tower=c["user_tower"],
                   max_seq_len=c["max_seq_len"], n_layers=c["n_layers"], n_heads=c["n_heads"], dropout=c["dropout"],
                   init_std=c["init_std"], hidden_dim=c["hidden_dim"], history_dropout=c["history_dropout"],
                   item_bias=c["item_bias"])

    k = int(c["ensemble"])
    return one() if k <= 1 else TAREnsemble([one() for _ in range(k)])


UNFINISHED = "TRAINING"  # marker file: present while (or because) a training run has not reached its end


def load_model(directory: str | Path, device: str = "cpu") -> TowerModel:
    """Load a model dir written by `train_towers` (best weights)."""
    d = Path(directory)
    if not (d / "config.json").exists() or not (d / "model.pt").exists():
        raise BadInput(f"{d}: not a trained tower model (no config.json/model.pt)", "run `recgpt train-towers` first")
    if (d / UNFINISHED).exists():
        raise BadInput(f"{d}: its training did not finish (killed or interrupted): model.pt is a best-so-far",
                       "rerun the same `recgpt train-towers` command: it resumes from the last checkpoint")
    config = json.loads((d / "config.json").read_text())
    shapes = TowerShapes(**config.pop("shapes"))
    net = build_net(shapes, config)
    net.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    net.to(pick_device(device)).eval()
    ids = json.loads((d / "ids.json").read_text())
    return TowerModel(
        net=net,
        feats=TowerFeatures.load(d / "features.npz"),
        user_ids=ids["user_ids"],
        item_ids=ids["item_ids"],
        vocab=json.loads((d / "vocab.json").read_text()),
        config=config,
        directory=d,
    )


@torch.no_grad()
def score_all(model: TowerModel, split_data: SplitData) -> torch.Tensor:
    """Collaborative scores y_col = h_u . h_v (beta = 1) for every user x item of `split_data`, (n_users, n_items),
    in split_data's index order. Users/items the model never saw score 0 (cold items) / 0 rows (cold users).
    Masking engaged items is left to the caller (evaluation masks train+valid)."""
    h_v = model.item_vectors().cpu()
    h_u = model.user_vectors().cpu()
    if model.user_ids == split_data.user_ids and model.item_ids == split_data.item_ids:
        return h_u @ h_v.T
    u_pos = {u: i for i, u in enumerate(model.user_ids)}
    v_pos = {v: i for i, v in enumerate(model.item_ids)}
    hu = torch.zeros(split_data.n_users, h_u.shape[1])
    hv = torch.zeros(split_data.n_items, h_v.shape[1])
    su = [(i, u_pos[u]) for i, u in enumerate(split_data.user_ids) if u in u_pos]
    sv = [(i, v_pos[v]) for i, v in enumerate(split_data.item_ids) if v in v_pos]
    if su:
        a, b = zip(*su, strict=True)
        hu[list(a)] = h_u[list(b)]
    if sv:
        a, b = zip(*sv, strict=True)
        hv[list(a)] = h_v[list(b)]
    return hu @ hv.T
