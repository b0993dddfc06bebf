"""Ensembles of TAR models: K members trained with seeds seed..seed+K-1 and served as one model (TAREnsemble)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from rich.console import Console

from recgpt_cli.towers.checkpoint import save_atomic
from recgpt_cli.towers.config import TowerConfig
from recgpt_cli.towers.model import TAR, TAREnsemble
from recgpt_cli.towers.saved import TowerModel, load_model, pick_device, write_static

if TYPE_CHECKING:
    from recgpt_cli.towers.train import TrainReport

TrainOne = Callable[..., "TrainReport"]


def train_ensemble(
    con: duckdb.DuckDBPyConnection, out: Path, cfg: TowerConfig, train_one: TrainOne, console: Console | None,
    after_epoch: Callable[[int], None] | None, validate: Callable[[TowerModel], float],
) -> tuple[list[TrainReport], float]:
    """Train cfg.ensemble members into out/member-K (each resumable on its own) with `train_one`, then save them as
    one model in `out`. Returns the members' reports and the ensemble's validation NDCG@10 (`validate`)."""
    reports: list[TrainReport] = []
    for k in range(cfg.ensemble):
        member = replace(cfg, ensemble=1, seed=cfg.seed + k)
        if console:
            console.print(f"ensemble member {k + 1}/{cfg.ensemble} (seed {member.seed})")
        reports.append(train_one(con, out / f"member-{k}", member, console=console, after_epoch=after_epoch))
    members = [load_model(out / f"member-{k}", device=str(pick_device(cfg.device))) for k in range(cfg.ensemble)]
    net = TAREnsemble([m.net for m in members if isinstance(m.net, TAR)]).eval()
    first = members[0]
    config = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "threads")}
    config["split_fingerprint"] = first.config.get("split_fingerprint")
    model = TowerModel(net, first.feats, first.user_ids, first.item_ids, first.vocab, config, out)
    write_static(out, model)
    save_atomic(net.state_dict(), out / "model.pt")  # last: a half-made ensemble is never loadable
    ndcg = validate(model)
    if console:
        console.print(f"ensemble of {cfg.ensemble}: valid NDCG@10 {ndcg:.4f} (members "
                      + ", ".join(f"{r.best_valid_ndcg10:.4f}" for r in reports) + ")")
    return reports, ndcg
