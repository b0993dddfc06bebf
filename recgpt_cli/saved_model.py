"""Load a saved tower model for another stage (retrieve, evaluate), checked against the database it is used with.

A model folder whose files are damaged, or that was trained on another database, is the user's input at fault:
both are BadInput naming the folder, never an internal error or silently wrong output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from recgpt_cli.errors import BadInput, RecgptError

MISMATCH_SHOWN = 3  # unknown ids named in the message


def load_tower_model(model_dir: str | Path, con: duckdb.DuckDBPyConnection | None = None) -> Any:
    """`towers.load_model(model_dir)`; with `con`, also check that every user and item the model knows is in that
    database (a model trained on another --db would recommend ids it does not have)."""
    from recgpt_cli.towers import load_model  # torch: imported only when a model is used

    try:
        model = load_model(model_dir)
    except RecgptError:
        raise
    except Exception as exc:  # noqa: BLE001 - json, torch and pickle each raise their own kind
        raise BadInput(f"{model_dir}: damaged tower model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                       "train it again with `recgpt train-towers`") from None
    if con is not None:
        check_model_matches_db(model_dir, model, con)
    return model


def check_model_matches_db(model_dir: str | Path, model: Any, con: duckdb.DuckDBPyConnection) -> None:
    for kind, ids in (("items", model.item_ids), ("users", model.user_ids)):
        id_col = kind[:-1] + "_id"
        missing = con.execute(f"SELECT x FROM unnest(?::VARCHAR[]) AS t(x) "
                              f"WHERE x NOT IN (SELECT {id_col} FROM {kind}) ORDER BY x", [list(ids)]).fetchall()
        if missing:
            shown = ", ".join(repr(r[0]) for r in missing[:MISMATCH_SHOWN])
            raise BadInput(f"{model_dir}: trained on another database: {len(missing):,} of its {len(ids):,} {kind} "
                           f"are not in this --db ({shown}{', …' if len(missing) > MISMATCH_SHOWN else ''})",
                           "pass the --db the model was trained on, or train a model on this one")


def check_model_split(model_dir: str | Path, model: Any, split: Any) -> None:
    """Refuse to score a model on a split other than the one it was trained on: its train items would be counted
    as held-out hits (or the held-out items it never saw as misses), whatever the model is worth."""
    protocol = model.config.get("protocol")
    if protocol != split.protocol:
        raise BadInput(f"{model_dir}: trained on the {protocol} split, asked to score on the {split.protocol} split",
                       f"use --protocol {protocol}, or train a model with --protocol {split.protocol}")
    fingerprint = model.config.get("split_fingerprint")
    if fingerprint is None:
        raise BadInput(f"{model_dir}: its config.json records no split fingerprint (an older recgpt, or edited), so "
                       "whether its train items are held out in this split cannot be checked",
                       "train it again with `recgpt train-towers`")
    if fingerprint != split.fingerprint():
        raise BadInput(f"{model_dir}: trained on another {protocol} split than this --db holds (another seed, "
                       "or data imported since), so its train items could be scored as held-out",
                       "pass the --db the model was trained on, or retrain on this one")


def check_model_on_db_split(model_dir: str | Path, model: Any, con: duckdb.DuckDBPyConnection) -> Any:
    """The `SplitData` of this --db that the model trained on, or BadInput: no such split here, a split older than
    the DB's behaviours (data imported since), or another version of it (another seed, a rebuild)."""
    from recgpt_cli.splits import check_fresh, load_split, split_info

    protocol = model.config.get("protocol") or "recbole"
    stored = split_info(con, protocol)
    if stored is None:
        raise BadInput(f"{model_dir}: this --db has no {protocol} split, so it is not the split the model "
                       "trained on", "pass the --db the model was trained on")
    check_fresh(con, stored)
    split = load_split(con, protocol)
    check_model_split(model_dir, model, split)
    return split
