"""`recgpt train-towers`: a preset (file) plus options that override its fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recgpt_cli.commands.common import DbOpt, QuietOpt, console, friendly_errors

_P = "(default: the preset's)"


def _opt(*names: str, help: str, **kw: object) -> typer.models.OptionInfo:
    return typer.Option(*names, help=f"{help} {_P}", show_default=False, **kw)  # type: ignore[arg-type]


@friendly_errors
def train_towers(
    db: DbOpt = Path("recgpt.duckdb"),
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Model directory (weights, config, checkpoints).")] = Path(
        "models/tar"),
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Named preset in presets/ (paper, default, default-loo, ...) or a .toml file. Default: "
        "`default` (best single model on validation), `default-loo` with --protocol loo; `paper` = §2.3 exactly.")
    ] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved settings as a preset "
                                               "file on stdout and exit.")] = False,
    protocol: Annotated[str | None, _opt("--protocol", help="Split: recbole (random 8/1/1) or loo.")] = None,
    split_seed: Annotated[int | None, _opt("--split-seed", help="Seed of a split made here; with a stored split of "
                                           "another seed, refused unless --new-split.")] = None,
    new_split: Annotated[bool, typer.Option("--new-split", help="Rebuild the stored split first (after an import, "
                                            "or for another --split-seed); models trained on the old one must be "
                                            "retrained (evaluate refuses them).")] = False,
    epochs: Annotated[int | None, _opt("--epochs", min=1, help="Epochs (early stopping applies).")] = None,
    dim: Annotated[int | None, _opt("--dim", min=2, help="Tower output size.")] = None,
    alpha: Annotated[float | None, _opt("--alpha", min=0.0, max=1.0, help="L_tag vs L_cate weight (§2.3.2).")] = None,
    tag_weight: Annotated[float | None, _opt("--tag-weight", min=0.0, help="Weight of alpha*L_tag + "
                                             "(1-alpha)*L_cate next to L_col (paper 1).")] = None,
    lr: Annotated[float | None, _opt("--lr", help="Adam learning rate.")] = None,
    weight_decay: Annotated[float | None, _opt("--weight-decay", min=0.0, help="Adam weight decay.")] = None,
    batch_size: Annotated[int | None, _opt("--batch-size", min=2, help="Rows per step (pairs or users).")] = None,
    negatives: Annotated[str | None, _opt("--negatives", help="Random negatives per batch, or `all` (every item: "
                                          "full softmax).")] = None,
    in_batch: Annotated[bool | None, _opt("--in-batch/--no-in-batch", help="The batch's other positives as "
                                          "negatives too (paper).")] = None,
    temperature: Annotated[float | None, _opt("--temperature", min=1e-4, help="Softmax temperature.")] = None,
    logq: Annotated[bool | None, _opt("--logq/--no-logq", help="logQ correction for sampling bias.")] = None,
    user_tower: Annotated[str | None, _opt("--user-tower", help="pooled (paper: id + pooled behaviour sequences), "
                                           "sequential (causal self-attention over the ordered history) or "
                                           "variational (a RecVAE encoder over the history).")] = None,
    pooling: Annotated[str | None, _opt("--pooling", help="Pooled tower: mean (paper) or attention.")] = None,
    layers: Annotated[int | None, _opt("--layers", min=1, help="Sequential tower: attention blocks; variational: "
                                       "dense layers.")] = None,
    heads: Annotated[int | None, _opt("--heads", min=1, help="Sequential tower: heads per block.")] = None,
    dropout: Annotated[float | None, _opt("--dropout", min=0.0, max=0.9, help="Sequential tower: dropout.")] = None,
    user_id: Annotated[bool | None, _opt("--user-id/--no-user-id", help="EMB(user id) in the pooled user tower "
                                         "(paper); --no-user-id = the user is only their history.")] = None,
    item_id_residual: Annotated[bool | None, _opt("--item-id-residual/--no-item-id-residual",
                                                  help="h_v = EMB(item id) + DNN(features) instead of DNN alone.")
                                ] = None,
    item_features: Annotated[bool | None, _opt("--item-features/--no-item-features", help="Item tower over the "
                                               "item's features (paper); --no-item-features = EMB(item id) "
                                               "alone.")] = None,
    item_bias: Annotated[bool | None, _opt("--item-bias/--no-item-bias", help="A learned bias per item added to "
                                           "h_u . h_v (served as one more vector coordinate).")] = None,
    history_dropout: Annotated[float | None, _opt("--history-dropout", min=0.0, max=0.9,
                                                  help="Share of history items hidden per training step.")] = None,
    hidden_dim: Annotated[int | None, _opt("--hidden-dim", min=2, help="Variational tower: width of its dense "
                                           "layers.")] = None,
    kl_gamma: Annotated[float | None, _opt("--kl-gamma", min=0.0, help="Variational tower: KL weight per history "
                                           "item (RecVAE's beta(x) = gamma*|x|).")] = None,
    encoder_passes: Annotated[int | None, _opt("--encoder-passes", min=0, help="Variational tower: passes that "
                                               "train it per epoch before one trains the item table (RecVAE); 0 "
                                               "= one joint pass.")] = None,
    batching: Annotated[str | None, _opt("--batching", help="pairs (paper: a row per engaged pair), users (a row per "
                                         "user; its masked history must rank all its items) or next-item "
                                         "(sequential tower: every position predicts the next item).")] = None,
    loss_weighting: Annotated[str | None, _opt("--loss-weighting", help="With --batching users: user (each user "
                                               "counts the same) or pair (each engaged pair does).")] = None,
    lr_schedule: Annotated[str | None, _opt("--lr-schedule", help="constant or cosine (decay to 0 at --epochs).")
                           ] = None,
    history_embedding: Annotated[str | None, _opt("--history-embedding", help="History items in the user tower: "
                                                  "tower (paper: item-tower vectors) or separate (own id "
                                                  "embeddings).")] = None,
    ensemble: Annotated[int | None, _opt("--ensemble", min=1, help="Train K members (seeds seed..seed+K-1) and "
                                         "serve their averaged scores as one model.")] = None,
    normalize: Annotated[bool | None, _opt("--normalize/--no-normalize", help="Unit-length tower outputs.")] = None,
    init_std: Annotated[float | None, _opt("--init-std", min=0.0, help="Embeddings start N(0, this); 0 = torch's "
                                           "default N(0, 1).")] = None,
    max_seq_len: Annotated[int | None, _opt("--max-seq-len", min=1, help="History entries kept per (user, "
                                            "behaviour); the sequential tower reads this many.")] = None,
    category_levels: Annotated[int | None, _opt("--category-levels", min=0, help="Category levels the item tower "
                                                "embeds.")] = None,
    buckets: Annotated[int | None, _opt("--buckets", min=1, help="Price / popularity quantile buckets.")] = None,
    patience: Annotated[int | None, _opt("--patience", min=1, help="Epochs without validation gain.")] = None,
    eval_every: Annotated[int | None, _opt("--eval-every", min=1, help="Validate every N epochs.")] = None,
    seed: Annotated[int | None, _opt("--seed", help="Random seed; runs with the same seed give the same model.")
                    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0 = one per core).")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = True,
    quiet: QuietOpt = False,
) -> None:
    """Train the user-item-tag three-tower retrieval model TAR (§2.3) on the train split."""
    from dataclasses import replace

    from recgpt_cli.errors import BadInput
    from recgpt_cli.splits import make_split, refuse_other_seed, split_info
    from recgpt_cli.store import connect
    from recgpt_cli.towers import train_towers as train
    from recgpt_cli.towers.config import check_config, default_preset, load_preset, preset_text

    cfg = load_preset(preset or default_preset(protocol))
    options: dict[str, Any] = dict(protocol=protocol, split_seed=split_seed, epochs=epochs, dim=dim, alpha=alpha,
                   tag_weight=tag_weight, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                   n_negatives=_negatives(negatives), in_batch=in_batch, temperature=temperature, logq=logq,
                   user_tower=user_tower, pooling=pooling, n_layers=layers, n_heads=heads, dropout=dropout,
                   use_user_id=user_id, item_id_residual=item_id_residual,
                   item_features=item_features, history_dropout=history_dropout, hidden_dim=hidden_dim,
                   kl_gamma=kl_gamma, encoder_passes=encoder_passes, item_bias=item_bias,
                   batching=batching, loss_weighting=loss_weighting, lr_schedule=lr_schedule,
                   history_embedding=history_embedding, ensemble=ensemble, normalize=normalize, init_std=init_std,
                   max_seq_len=max_seq_len, n_levels=category_levels, n_buckets=buckets, patience=patience,
                   eval_every=eval_every, seed=seed)
    cfg = replace(cfg, device=device, threads=threads, resume=resume,
                  **{k: v for k, v in options.items() if v is not None})
    try:
        check_config(cfg)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if print_config:
        typer.echo(preset_text(cfg, f"resolved from preset {preset or default_preset(protocol)}"), nl=False)
        return
    with connect(db, create=False) as con:
        stored = split_info(con, cfg.protocol)
        if new_split:
            info = make_split(con, cfg.protocol, seed=cfg.split_seed, force=True)
            if not quiet:
                console.print(f"new {cfg.protocol} split: {info.n_train:,} train, {info.n_valid:,} valid, "
                              f"{info.n_test:,} test interactions")
        else:
            refuse_other_seed(stored, split_seed, "leave --split-seed out to use it, or add --new-split to rebuild it")
        report = train(con, out_dir, cfg, console=None if quiet else console)
    if not quiet:
        console.print(f"saved {out_dir}: best epoch {report.best_epoch} of {report.epochs_run}, "
                      f"valid NDCG@10 {report.best_valid_ndcg10:.4f}, {report.n_train:,} train pairs, "
                      f"{report.seconds:.1f}s")


def _negatives(text: str | None) -> int | str | None:
    from recgpt_cli.errors import BadInput

    if text is None or text == "all":
        return text
    if text.isdigit():
        return int(text)
    raise BadInput(f"--negatives {text}: expected a count (e.g. 256) or all")
