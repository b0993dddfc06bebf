"""`recgpt train-towers`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recgpt_cli.commands.common import DbOpt, QuietOpt, SeedOpt, console, friendly_errors


@friendly_errors
def train_towers(
    db: DbOpt = Path("recgpt.duckdb"),
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Model directory (weights, config, checkpoints).")] = Path(
        "models/tar"
    ),
    protocol: Annotated[str, typer.Option("--protocol", help="Split: recbole (random 8/1/1) or loo.")] = "recbole",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 30,
    dim: Annotated[int, typer.Option("--dim", min=2, help="Tower output size.")] = 64,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="L_tag vs L_cate weight (§2.3.2).")] = 0.5,
    lr: Annotated[float, typer.Option("--lr")] = 5e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2)] = 512,
    negatives: Annotated[int, typer.Option("--negatives", min=0, help="Random negatives per batch.")] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=1e-4)] = 0.1,
    logq: Annotated[bool, typer.Option("--logq/--no-logq", help="logQ correction for sampling bias.")] = False,
    pooling: Annotated[str, typer.Option("--pooling", help="User-tower pooling: mean (paper) or attention.")] = "mean",
    user_id: Annotated[bool, typer.Option("--user-id/--no-user-id", help="EMB(user id) in the user tower (paper); "
                                          "--no-user-id = the user is only their pooled history.")] = True,
    item_id_residual: Annotated[bool, typer.Option("--item-id-residual/--no-item-id-residual",
                                                   help="h_v = EMB(item id) + DNN(features) instead of DNN alone.")
                                ] = False,
    history_dropout: Annotated[float, typer.Option("--history-dropout", min=0.0, max=0.9,
                                                   help="Share of history items hidden per training step.")] = 0.0,
    batching: Annotated[str, typer.Option("--batching", help="pairs (paper: a row per engaged user-item pair) or "
                                          "users (a row per user; its masked history must rank all its items).")
                        ] = "pairs",
    loss_weighting: Annotated[str, typer.Option("--loss-weighting", help="With --batching users: user (each user "
                                                "counts the same) or pair (each engaged pair does).")] = "user",
    lr_schedule: Annotated[str, typer.Option("--lr-schedule", help="constant or cosine (decay to 0 at --epochs).")
                           ] = "constant",
    history_embedding: Annotated[str, typer.Option("--history-embedding",
                                                   help="History items in the user tower: tower (paper: item-tower "
                                                        "vectors) or separate (their own id embeddings).")
                                 ] = "tower",
    ensemble: Annotated[int, typer.Option("--ensemble", min=1, help="Train K members (seeds seed..seed+K-1) and "
                                          "serve their averaged scores as one model.")] = 1,
    tag_weight: Annotated[float, typer.Option("--tag-weight", min=0.0,
                                              help="Weight of alpha*L_tag + (1-alpha)*L_cate next to L_col (paper 1).")
                          ] = 1.0,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Epochs without validation gain.")] = 3,
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Validate every N epochs.")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0 = one per core).")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint.")] = True,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train the user-item-tag three-tower retrieval model TAR (§2.3) on the train split."""
    from recgpt_cli.errors import BadInput
    from recgpt_cli.store import connect
    from recgpt_cli.towers import TowerConfig
    from recgpt_cli.towers import train_towers as train
    from recgpt_cli.towers.train import check_config

    cfg = TowerConfig(protocol=protocol, epochs=epochs, dim=dim, alpha=alpha, lr=lr, batch_size=batch_size,
                      n_negatives=negatives, temperature=temperature, logq=logq, pooling=pooling, use_user_id=user_id,
                      item_id_residual=item_id_residual, history_dropout=history_dropout, batching=batching,
                      lr_schedule=lr_schedule, tag_weight=tag_weight, history_embedding=history_embedding,
                      ensemble=ensemble, loss_weighting=loss_weighting, patience=patience, eval_every=eval_every,
                      device=device, threads=threads, resume=resume, seed=seed)
    try:
        check_config(cfg)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    with connect(db, create=False) as con:
        report = train(con, out_dir, cfg, console=None if quiet else console)
    if not quiet:
        console.print(f"saved {out_dir}: best epoch {report.best_epoch} of {report.epochs_run}, "
                      f"valid NDCG@10 {report.best_valid_ndcg10:.4f}, {report.n_train:,} train pairs, "
                      f"{report.seconds:.1f}s")
