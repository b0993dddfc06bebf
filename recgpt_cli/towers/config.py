"""TowerConfig and its presets: plain values with defaults (nanoGPT's config habit), named presets as files.

    presets/paper.toml        the paper's §2.3 configuration exactly
    presets/default.toml      the best single model chosen on validation (RecBole split) — `train-towers` default
    presets/default-loo.toml  the default for `--protocol loo` (the sequential user tower)

A preset file is flat TOML, one key per TowerConfig field; fields it leaves out keep the dataclass default (the
paper's value). `--preset NAME` or `--preset FILE.toml`; every field is also a `train-towers` option that overrides it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from recgpt_cli.devices import check_device
from recgpt_cli.errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Negatives = int | Literal["all"]


@dataclass
class TowerConfig:
    """Training settings; the defaults are the paper's (§2.3). Every field is a `recgpt train-towers` option."""

    protocol: str = "recbole"
    split_seed: int = 2020  # used only when the DB has no stored split for `protocol` yet
    epochs: int = 30
    dim: int = 64
    alpha: float = 0.5  # L_tag vs L_cate balance (§2.3.2)
    tag_weight: float = 1.0  # weight of L_sem = alpha*L_tag + (1-alpha)*L_cate next to L_col (paper: 1)
    lr: float = 5e-3
    weight_decay: float = 0.0
    batch_size: int = 512
    n_negatives: Negatives = 256  # random negatives per batch, or "all" (every item: full softmax)
    in_batch: bool = True  # also use the batch's other positives as negatives (popularity-distributed)
    temperature: float = 0.1
    logq: bool = False  # logQ correction of sampled-softmax popularity bias
    # "pooled" (paper): EMB(user id) + pooled behaviour sequences -> DNN. "sequential": causal self-attention over
    # the ordered history with position and behaviour embeddings (SASRec-style, beyond the paper). "variational":
    # a RecVAE encoder over the history multi-hot, h_u = its posterior mean (towers/variational.py)
    user_tower: str = "pooled"
    pooling: str = "mean"  # pooled user tower: "mean" (paper) or "attention"
    n_layers: int = 2  # sequential user tower: attention blocks; variational: dense layers
    n_heads: int = 1  # sequential user tower: heads per block
    dropout: float = 0.2  # sequential user tower: dropout on embeddings, attention and FFN
    use_user_id: bool = True  # EMB(user id) in the pooled user tower (paper); False = history only
    item_id_residual: bool = False  # h_v = EMB(item id) + DNN(features) instead of DNN alone
    item_features: bool = True  # False: h_v = EMB(item id) alone, no feature DNN (SASRec's item embedding)
    item_bias: bool = False  # y_col = h_u . h_v + b_v: a learned popularity offset per item (Mult-VAE's decoder bias)
    history_dropout: float = 0.0  # share of history entries hidden per training step (0 = paper); variational:
    # the share of its input multi-hot dropped (and the rest scaled up, as F.dropout)
    hidden_dim: int = 600  # variational user tower: width of its dense layers (RecVAE's 600)
    kl_gamma: float = 0.005  # variational user tower: KL weight per history item, beta(x) = gamma*|x| (RecVAE)
    # variational user tower: passes over the users that train it per epoch, each epoch ending with one pass that
    # trains the item table (RecVAE's alternating updates); 0 = one pass that trains both together
    encoder_passes: int = 3
    # "pairs" (paper): one row per engaged (user, item), the target left out of the history. "users": one row per
    # user, history_dropout hides part of the history and the softmax must find ALL the user's train items
    # (multi-positive, Mult-DAE style). "next-item" (sequential tower): every position predicts the next item.
    # batch_size counts users for "users" and "next-item".
    batching: str = "pairs"
    # "users" batching: "user" = each user's loss is the mean over its items (every user counts the same);
    # "pair" = every engaged pair counts the same (heavy users weigh more, as with "pairs" batching)
    loss_weighting: str = "user"
    lr_schedule: str = "constant"  # or "cosine": lr decays to 0 over `epochs` (set per epoch, so resume-safe)
    eval_every: int = 1  # validate (and maybe early-stop) every N epochs; patience counts epochs
    history_embedding: str = "tower"  # history items as item-tower outputs (paper) or "separate" id embeddings
    ensemble: int = 1  # K > 1: train K members (seeds seed..seed+K-1) and serve their averaged cosine scores
    normalize: bool = True  # unit-length tower outputs
    init_std: float = 0.0  # > 0: every embedding table starts N(0, init_std) (SASRec/GPT: 0.02); 0 = torch's N(0, 1)
    max_seq_len: int = 200  # history entries kept per (user, behaviour); the sequential tower reads this many
    n_levels: int = 3  # category levels embedded by the item tower
    n_buckets: int = 10  # price / popularity quantile buckets
    seed: int = 0
    patience: int = 3
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default (one per core)
    resume: bool = True


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config.json with every field it predates set to its TowerConfig default (what that run did)."""
    return {**asdict(TowerConfig()), **saved}


# Fields that do not change what is learned: a checkpoint made with other values of these is still resumed.
RUN_FIELDS = ("epochs", "patience", "eval_every", "device", "threads", "resume", "ensemble", "split_seed")
_CHOICES = {"batching": ("pairs", "users", "next-item"), "lr_schedule": ("constant", "cosine"),
            "pooling": ("mean", "attention"), "loss_weighting": ("user", "pair"),
            "history_embedding": ("tower", "separate"), "user_tower": ("pooled", "sequential", "variational"),
            "protocol": ("recbole", "loo")}


# Bounds of numeric fields (the `train-towers` options' min/max, so a preset file cannot pass what the CLI refuses).
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "dim": (2, None), "alpha": (0.0, 1.0), "tag_weight": (0.0, None), "lr": (0.0, None), "weight_decay": (0.0, None),
    "batch_size": (2, None), "temperature": (1e-4, None), "dropout": (0.0, 0.9), "history_dropout": (0.0, 0.9),
    "init_std": (0.0, None), "kl_gamma": (0.0, None), "hidden_dim": (2, None), "encoder_passes": (0, None),
    "n_levels": (0, None), "n_buckets": (1, None), "threads": (0, None), "seed": (0, None), "split_seed": (0, None),
    **{name: (1, None) for name in ("eval_every", "patience", "ensemble", "n_layers", "n_heads", "epochs",
                                    "max_seq_len")},
}
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_config(cfg: TowerConfig) -> None:
    """Reject settings that cannot work before any data is read; messages name the `train-towers` option."""
    for f in fields(cfg):
        value, kinds = getattr(cfg, f.name), _TYPES.get(str(f.type))
        if kinds and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            raise ValueError(f"--{option_name(f.name)} {value!r}: expected {f.type}")
    for name, (low, high) in _RANGES.items():
        value = getattr(cfg, name)
        if not math.isfinite(value):  # nan passes every comparison
            raise ValueError(f"--{option_name(name)} {value}: expected a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"--{option_name(name)} {value}: must be {bounds}")
    if cfg.lr == 0:
        raise ValueError("--lr 0: must be > 0")
    check_device(cfg.device)
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{option_name(name)} {getattr(cfg, name)}: expected {' or '.join(allowed)}")
    if cfg.n_negatives != "all" and (not isinstance(cfg.n_negatives, int) or cfg.n_negatives < 0):
        raise ValueError(f"--negatives {cfg.n_negatives}: expected a count >= 0 or all")
    if cfg.batching != "pairs" and cfg.logq:
        raise ValueError("--logq corrects per-pair sampled negatives: use it with --batching pairs")
    if (cfg.batching == "next-item") != (cfg.user_tower == "sequential"):
        raise ValueError("--batching next-item goes with --user-tower sequential (and only with it)")
    if cfg.batching == "next-item" and cfg.history_dropout > 0:
        raise ValueError("--history-dropout hides pooled history; the sequential tower uses --dropout")
    if cfg.user_tower == "variational" and cfg.batching != "users":
        raise ValueError("--user-tower variational learns from whole histories: use it with --batching users")
    if cfg.user_tower == "variational" and cfg.normalize:
        raise ValueError("--user-tower variational scores raw dot products (its KL term acts on their scale): "
                         "add --no-normalize")
    if cfg.item_bias and cfg.normalize:
        raise ValueError("--item-bias adds to raw dot products: add --no-normalize")
    if cfg.user_tower == "sequential" and cfg.dim % cfg.n_heads:
        raise ValueError(f"--dim {cfg.dim} must be a multiple of --heads {cfg.n_heads}")


def option_name(field_name: str) -> str:
    """The `train-towers` option of a field (n_negatives -> negatives, n_layers -> layers)."""
    return {"n_negatives": "negatives", "n_layers": "layers", "n_heads": "heads", "n_levels": "category-levels",
            "n_buckets": "buckets", "use_user_id": "user-id"}.get(field_name, field_name.replace("_", "-"))


def presets_dir() -> Path:
    """Top-level `presets/` in a checkout, or `recgpt_cli/presets` inside an installed wheel."""
    packaged = Path(str(resources.files("recgpt_cli"))) / "presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def default_preset(protocol: str | None) -> str:
    """The preset `train-towers` uses without --preset: the validation-chosen default of the protocol."""
    return "default-loo" if protocol == "loo" else "default"


def load_preset(name_or_path: str | Path) -> TowerConfig:
    """A TowerConfig from `presets/<name>.toml` or a TOML file; unknown keys and bad values are errors."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = presets_dir() / f"{name_or_path}.toml"
        if not path.exists():
            raise BadInput(f"--preset {name_or_path}: no such preset", f"use one of: {', '.join(preset_names())}, "
                           "or a .toml file")
    try:
        values: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{path}: {exc}", "a preset is flat TOML: one `field = value` per line") from None
    known = {f.name: f for f in fields(TowerConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise BadInput(f"{path}: unknown field(s) {', '.join(unknown)}", f"fields: {', '.join(known)}")
    cfg = TowerConfig(**values)
    for f in fields(cfg):  # a float field written as 1 in TOML is still a float
        if f.type == "float" and isinstance(getattr(cfg, f.name), int):
            setattr(cfg, f.name, float(getattr(cfg, f.name)))
    try:
        check_config(cfg)
    except ValueError as exc:
        raise BadInput(f"{path}: {exc}") from None
    return cfg


def preset_text(cfg: TowerConfig, comment: str = "") -> str:
    """`cfg` as a preset file (every field, in declaration order); load_preset(preset_text(c)) == c."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    for key, value in asdict(cfg).items():
        if key in ("device", "threads", "resume"):  # how to run, not what to learn: options only
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
