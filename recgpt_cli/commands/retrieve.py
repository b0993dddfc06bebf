"""`recgpt retrieve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recgpt_cli.commands.common import DbOpt, OutOpt, QuietOpt, console, friendly_errors
from recgpt_cli.tags import DEFAULT_BETA


@friendly_errors
def retrieve(
    db: DbOpt = Path("recgpt.duckdb"),
    model_dir: Annotated[Path, typer.Option("--model", help="Model directory from `recgpt train-towers`.")] = Path(
        "models/tar"
    ),
    tags: Annotated[
        str | None, typer.Option("--tags", help="`recgpt predict-tags` output as it wrote it (JSONL), - = stdin.")
    ] = None,
    beta: Annotated[float, typer.Option("--beta", help="h_fuse = beta*h_u + (1-beta)*h_t; 1 = user tower only "
                                        "(default chosen on validation).")] = DEFAULT_BETA,
    k: Annotated[int, typer.Option("--k", min=1, max=1_000_000, help="Items per user.")] = 50,
    per_tag_quota: Annotated[
        int | None, typer.Option("--per-tag-quota", min=1, help="Max items per tag (default: an "
                                       "even share of every prefix, ceil(n / tags) of the first n: --k never changes "
                                       "the top 10).")
    ] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Brute-force search instead of hnswlib.")] = False,
    exclude: Annotated[
        str, typer.Option("--exclude", help="Filter engaged items: train (the model's train split: what "
                          "`evaluate` scores) or all (any behaviour, valid/test included: serving only, its lists "
                          "cannot be evaluated).")
    ] = "train",
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Split the model must have been trained on (checked).")
    ] = None,
    ef: Annotated[int, typer.Option("--ef", min=1, help="hnswlib search breadth.")] = 200,
    m: Annotated[int, typer.Option("--M", min=2, help="hnswlib graph degree.")] = 32,
    out: OutOpt = "-",
    quiet: QuietOpt = False,
) -> None:
    """Retrieve items per user by fusing user and tag towers, h_fuse = beta*h_u + (1-beta)*h_t (§2.3.3)."""
    from recgpt_cli.errors import BadInput
    from recgpt_cli.io import Rejects, jsonl_writer, rejects_path_for, source_name
    from recgpt_cli.retrieve import check_tags_split, read_tags
    from recgpt_cli.retrieve import retrieve as run_retrieve
    from recgpt_cli.saved_model import check_model_matches_db, check_model_on_db_split, load_tower_model
    from recgpt_cli.schema import stage_row
    from recgpt_cli.splits import PROTOCOLS
    from recgpt_cli.store import connect

    if exclude not in ("train", "all"):
        raise BadInput(f"--exclude {exclude}: expected train or all")
    if protocol is not None and protocol not in PROTOCOLS:
        raise BadInput(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    model = load_tower_model(model_dir)
    if protocol is not None and protocol != model.config.get("protocol"):
        raise BadInput(f"--protocol {protocol}: {model_dir} was trained on the {model.config.get('protocol')} split")
    lines: dict[str, int] = {}
    tags_by_user, empty = read_tags(tags, lines) if tags else ({}, 0)
    check_tags_split(tags_by_user, model, source_name(tags or "-"), lines)
    known = set(model.user_ids)
    rejects = Rejects(source_name(tags or "-"))
    for u in tags_by_user:
        if u not in known:  # no train interactions: the model has no h_u to fuse the tags with
            rejects.add(lines[u], "user unknown to the model (no train interactions): no recommendations", u)
    unknown = len(rejects)
    with connect(db, read_only=True) as con, jsonl_writer(out) as writer:
        check_model_matches_db(model_dir, model, con)
        if exclude == "train":  # lists for `evaluate`: on the split the model trained on, as it stands in the --db
            try:
                check_model_on_db_split(model_dir, model, con)
            except BadInput as exc:
                serving = "for serving lists that nothing scores, --exclude all"
                raise BadInput(exc.message, f"{exc.hint}; or, {serving}" if exc.hint else serving) from None
        for rec in run_retrieve(con, model, tags_by_user, beta=beta, k=k, per_tag_quota=per_tag_quota, exact=exact,
                                exclude=exclude, ef=ef, m=m):
            writer.write(stage_row("recommendation", rec))
    if not quiet:
        console.print(f"retrieved {writer.count:,} (user, item) rows for {len(model.user_ids):,} users; "
                      f"{len(tags_by_user) - unknown:,} users with tags, {empty:,} tag records without tags, "
                      f"{unknown:,} tag users unknown to the model (skipped"
                      + (f", listed in {rejects_path_for(out, tags or '-')})" if unknown else ")"))
    if unknown:
        rejects.write(rejects_path_for(out, tags or "-"))
