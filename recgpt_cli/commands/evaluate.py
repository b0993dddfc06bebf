"""`recgpt evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recgpt_cli.commands.common import DbOpt, QuietOpt, SeedOpt, console, friendly_errors

HELP = """Score recommendations with RecBole's metric definitions, full ranking, on the stored split.

[bold]What is scored[/] (exactly one): --model DIR (a `recgpt train-towers` model: every user x every item,
y = h_u.h_v), --recs FILE (any recommendation JSONL {"user_id","item_id","rank"|"score"}, e.g. from
`recgpt retrieve`; rank 1 = best, else higher score = better), or --baseline pop|itemknn|bpr|ease|dlae (fitted
here on the train split; EASE's λ, DLAE's dropout and λ, and BPR's epochs chosen on validation).

[bold]Protocols[/] (--protocol; the split is made once, seeded by --split-seed (default 2020), stored in the DB
and shared with train-towers and retrieve; --split-seed other than the stored split's is refused; --seed seeds the
baselines and the tag->category model only):
[bold]recbole[/] (default): RecBole's general-recommendation default — per user, random order, 80/10/10
train/valid/test with RecBole's rounding. [bold]loo[/]: leave-one-out by time — per user the last interaction is
test, the second-last valid, the rest train. Testing masks train+valid items (validation masks train).

[bold]Metrics[/] (@k for each --k): recall, ndcg, hit, mrr, precision, itemcoverage, averagepopularity (mean
train count), giniindex, tailpercentage (least popular 10% + unseen items), categorydiversity (distinct leaf
categories / k), exposure_decile and hitrate_decile (10 values, decile 1 = most popular items); with --tags,
hr_tagcategory@30: share of users whose next item's category is among the categories (via the tag->category
model phi, fitted on item titles) of their 30 predicted tags (paper 2.2.2; use --protocol loo for "next"), the
tag quality rates (tag_kept_share, tag_valid_share, tag_bad_reason_share), interest_reason_grounded /
tag_reason_grounded (share of reasons claiming nothing the user's compressed history lacks: no product word it
does not hold, no count it does not show), tagitem_hit@50 / tagitem_recall@50 with --model,
interest_precision/recall/f1 with --truth. Tags made from a history that saw the scored phase are refused (exit
2): make them with `recgpt compress --split PROTOCOL --phase PHASE`. exploration@k: share of
recommended items whose category is absent from the user's visible history.

[bold]Output[/]: --json prints one JSON object on stdout (a --compare system under "compare"); otherwise a
table on stdout. --plot DIR writes PNGs (exposure by popularity decile side by side, like the paper's
Figure 1, and a category-diversity histogram)."""


def _parse_ks(text: str) -> list[int]:
    from recgpt_cli.errors import BadInput

    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise BadInput(f"--k {text!r}: expected comma-separated integers, e.g. 10,20") from None
    if not ks or ks[0] < 1:
        raise BadInput(f"--k {text!r}: expected positive integers, e.g. 10,20")
    return ks


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return " ".join(f"{v:.3f}" for v in value)
    return str(value)


@friendly_errors
def evaluate(
    db: DbOpt = Path("recgpt.duckdb"),
    model: Annotated[Path | None, typer.Option("--model", help="Tower model directory (recgpt train-towers).")] = None,
    recs: Annotated[str | None, typer.Option("--recs", help="Recommendation JSONL to score, - for stdin.")] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Fit and score: pop, itemknn, bpr, ease, dlae.")
    ] = None,
    compare: Annotated[str | None, typer.Option("--compare", help="A second recommendation JSONL, beside.")] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="recbole (random 8/1/1 per user) or loo (leave-one-out by time); "
                                 "default: the model's, else recbole.")
    ] = None,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "10,20",
    phase: Annotated[str, typer.Option("--phase", help="test, or valid (for tuning).")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print every metric as one JSON object on stdout.")] = False,
    plot_arg: Annotated[str | None, typer.Option("--plot", help="Write PNG plots into this folder.")] = None,
    tags: Annotated[
        str | None, typer.Option("--tags", help="predict-tags (or mine-interests) JSONL made with `compress --split "
                                 "... --phase` for this phase: add HR@30 of tag->category (paper 2.2.2), tag quality "
                                 "rates, and with --model tag->item Hit/Recall@50 (beta = 0).")
    ] = None,
    truth: Annotated[
        str | None, typer.Option("--truth", help="Ground-truth interests JSONL {user_id, interests: [leaf, ...]} "
                                 "(sample_data/truth_interests.jsonl): add interest precision/recall/F1 via phi.")
    ] = None,
    split_seed: Annotated[int | None, typer.Option(
        "--split-seed", min=0, help="Seed of the split if this --db has none yet (default 2020); another seed than "
        "the stored split's is refused (rebuild it with `recgpt train-towers --new-split`).")] = None,
    seed: SeedOpt = 2020,
    quiet: QuietOpt = False,
) -> None:
    from recgpt_cli.errors import BadInput
    from recgpt_cli.evaluate import run_evaluation
    from recgpt_cli.splits import make_split, refuse_other_seed, split_info
    from recgpt_cli.store import connect

    ks = _parse_ks(k)  # options first: a bad one must not leave a split behind
    if phase not in ("valid", "test"):
        raise BadInput(f"--phase {phase}: expected valid or test")
    if plot_arg is not None and not plot_arg.strip():  # Path("") is the current folder: never a silent default
        raise BadInput("--plot '': empty folder name", "give the folder for the PNGs, e.g. --plot out/plots")
    plot = Path(plot_arg) if plot_arg is not None else None
    if plot is not None and plot.exists() and not plot.is_dir():
        raise BadInput(f"--plot {plot}: is a file, expected a folder for the PNGs")
    if model is None:  # a model is scored only on the split it trained on: never make one for it
        with connect(db, create=False, read_only=True) as con:
            stored = split_info(con, protocol or "recbole")
        if stored is None:
            with connect(db, create=False) as con:
                make_split(con, protocol or "recbole", seed=2020 if split_seed is None else split_seed)
        refuse_other_seed(stored, split_seed, "leave --split-seed out to score on it, or rebuild it with "
                          "`recgpt train-towers --new-split --split-seed N` (and retrain the models)")
    elif split_seed is not None:
        raise BadInput(f"--split-seed {split_seed}: a --model is scored on the split it was trained on",
                       "leave --split-seed out")
    # read-only from here on, so `recgpt retrieve ... | recgpt evaluate --recs -` can share the --db
    with connect(db, create=False, read_only=True) as con:
        result = run_evaluation(con, model_dir=model, recs_path=recs, baseline=baseline, compare_path=compare,
                                protocol=protocol, ks=ks, phase=phase, plot_dir=plot, seed=seed,
                                tags_path=tags, truth_path=truth)
    if as_json:
        import orjson

        typer.echo(orjson.dumps(result.to_json(), option=orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="recgpt evaluate")
        table.add_column("metric")
        for name in result.systems:
            table.add_column(name, justify="right")
        keys = list(next(iter(result.systems.values())))
        for key in keys:
            if key != "system":
                table.add_row(key, *(_fmt(m.get(key, "")) for m in result.systems.values()))
        Console().print(table)
    if not quiet:
        for p in result.plots:
            console.print(f"wrote {p}")


evaluate.__doc__ = HELP
