"""TAR: the user-item-tag three-tower retrieval model (paper §2.3).

    from recgpt_cli.towers import TowerConfig, train_towers, load_model, score_all
    report = train_towers(con, "models/tar", TowerConfig(epochs=20))
    model = load_model("models/tar")
    scores = score_all(model, split_data)      # (n_users, n_items) collaborative scores h_u . h_v

config.py (TowerConfig, presets/) · model.py (towers) · losses.py (L_col, L_tag, L_cate) · data.py (features from
DuckDB) · batches.py (pairs / users / next-item steps) · train.py (the loop) · checkpoint.py (resume) ·
ensemble.py (K members as one model) · saved.py (model dir, vectors). Retrieval with fused user/tag vectors
lives in recgpt_cli/retrieve.py.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from recgpt_cli.towers.config import TowerConfig, load_preset

if TYPE_CHECKING:
    from recgpt_cli.towers.saved import TowerModel, load_model, score_all
    from recgpt_cli.towers.train import TrainReport, train_towers

__all__ = ["TowerConfig", "TowerModel", "TrainReport", "load_model", "load_preset", "score_all", "train_towers"]
# The torch-bound names load on first use, so reading a preset (`recgpt run`, the CLI's options) imports no torch.
_LAZY = {"TowerModel": "saved", "load_model": "saved", "score_all": "saved", "TrainReport": "train",
         "train_towers": "train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"recgpt_cli.towers.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
