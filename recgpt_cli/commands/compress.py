"""`recgpt compress`: reliable behaviours -> hierarchical compressed histories, one JSONL record per user (§2.1.1)."""

from __future__ import annotations

import math
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recgpt_cli.commands.common import DbOpt, OutOpt, QuietOpt, SeedOpt, console, friendly_errors
from recgpt_cli.compress import DEFAULT_MAX_TOKENS, SESSION_CLICKS, SUMMARY_CATEGORIES

if TYPE_CHECKING:
    from rich.table import Table

    from recgpt_cli.compress import CompressStats


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def stats_table(stats: CompressStats) -> Table:
    """The `--stats` table: behaviours by type, then tokens, budget and items lost."""
    from rich.table import Table

    when = (f"{stats.split} split, {stats.phase} phase (each user up to their cut)" if stats.split
            else f"up to {stats.date}")
    table = Table(title=f"compress {when}, budget {stats.max_tokens or 'none'} tokens")
    for col in ("behaviour", "kept", "dropped", "after cut / held out" if stats.split else "after --date"):
        table.add_column(col, justify="left" if col == "behaviour" else "right")
    for btype, c in stats.by_type.items():
        table.add_row(btype, f"{c['kept']:,}", f"{c['dropped']:,}", f"{c['after_date']:,}")
    table.add_section()
    rows = [
        ("users", f"{stats.users:,}"),
        ("users with no reliable behaviour", f"{stats.users_empty:,}"),
        ("tokens raw (naive, 1 line/behaviour)", f"{stats.tokens_raw:,}"),
        ("tokens compressed", f"{stats.tokens_compressed:,}"),
        ("reduction", f"{stats.reduction:.1%}"),
        ("users within budget", f"{stats.within_budget:.1%}"),
        ("users within budget, raw", f"{stats.users_raw_within_budget / max(stats.users, 1):.1%}"),
        ("users truncated / periods dropped", f"{stats.users_truncated:,} / {stats.periods_dropped:,}"),
        ("items lost (truncated users)", f"{stats.items_lost:,} of {stats.items:,}"),
        ("items lost (untruncated users)", f"{stats.items_lost_untruncated:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value, "", "")
    return table


def _ensure_split(db: Path, protocol: str, seed: int | None) -> None:
    """Make the stored split once (read-write), so the read-only pass below can use it."""
    from recgpt_cli.splits import PROTOCOLS, make_split, refuse_other_seed, split_info
    from recgpt_cli.store import open_db

    if protocol not in PROTOCOLS:
        from recgpt_cli.errors import BadInput

        raise BadInput(f"--split {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    con = open_db(db, read_only=True)
    try:
        stored = split_info(con, protocol)
    finally:
        con.close()
    refuse_other_seed(stored, seed, "leave --split-seed out to cut the histories for it")
    if stored is None:
        con = open_db(db)
        try:
            make_split(con, protocol, seed=2020 if seed is None else seed)
        finally:
            con.close()


@friendly_errors
def compress(
    db: DbOpt = Path("recgpt.duckdb"),
    out: OutOpt = "-",
    ref_date: Annotated[str | None, typer.Option(
        "--date", help="Reference date YYYY-MM-DD: periods are days within 30 days of it, months within a year, "
        "years beyond; later behaviours are ignored. Default: the date of the newest behaviour in --db "
        "(never today's date).")] = None,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", help="Token budget per user (target model's tokenizer); over it, the oldest periods are "
        "dropped first. 0 = no budget. Default: the budget the aligned model does best with (measured).")
        ] = DEFAULT_MAX_TOKENS,
    keep: Annotated[str, typer.Option(
        "--keep", help="Behaviour types kept as reliable, comma-separated (add 'click' to keep clicks).")
    ] = "purchase,cart,favorite,rating,review_read,detail_view,search",
    min_rating: Annotated[float, typer.Option("--min-rating", help="Ratings below this are dropped.")] = 4.0,
    summary_categories: Annotated[int, typer.Option(
        "--summary-categories", min=0, help="When the budget hides older behaviours, a last line names up to this "
        "many of their items' categories (within the budget). 0 = no such line.")] = SUMMARY_CATEGORIES,
    session_clicks: Annotated[int, typer.Option(
        "--session-clicks", min=0, help="Keep this many of the newest plain clicks of each user's newest active day "
        "(where the user is now; other clicks are dropped as noise). 0 = none.")] = SESSION_CLICKS,
    users: Annotated[str | None, typer.Option("--users", help="Only these user ids, comma-separated.")] = None,
    in_path: Annotated[str | None, typer.Option(
        "--in", help="Optional JSONL (or -) whose records carry user_id: compress only those users.")] = None,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="K/N: only the users of shard K of N (0 <= K < N, by a hash of the user id, the same on "
        "every machine), after --users/--in: N workers with --shard 0/N ... N-1/N compress every user once. See "
        "README, Scale out.")] = None,
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", help="GGUF file whose tokenizer counts tokens. Default: the embedded model.")] = None,
    split: Annotated[str | None, typer.Option(
        "--split", help="Build each history only from what a model may see in --phase of this stored split "
        "(recbole|loo; made with --split-seed if the DB has none): for scoring LLM output on valid/test without "
        "leaking held-out items. Each user's date becomes their cut.")] = None,
    phase: Annotated[str | None, typer.Option(
        "--phase", help="With --split: valid (sees train) or test (sees train + valid, the default).")] = None,
    split_seed: Annotated[int | None, typer.Option(
        "--split-seed", min=0, help="Seed of the split when --split has to make it (default 2020, as train-towers); "
        "another seed than the stored split's is refused.")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Print a table of kept/dropped behaviours, tokens "
                                         "raw vs compressed, budget and items lost (stderr).")] = False,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Compress each user's reliable behaviours into the paper's hierarchical form (§2.1.1).

    Output: one JSONL record per user with `compressed` lines like
    `2025-06-28(purchase,cart), 2025-05(detail_view) | Lumina Cookware Set (Cookware), search:"frying pan"`.
    Compression is deterministic; --seed is accepted for symmetry with the other stages and unused.
    """
    from recgpt_cli.compress import (
        SplitView,
        compress_stats,
        compress_users,
        default_reference_date,
        in_shard,
        parse_shard,
    )
    from recgpt_cli.errors import BadInput
    from recgpt_cli.io import iter_jsonl, jsonl_writer, source_name
    from recgpt_cli.store import known_user_ids, open_db
    from recgpt_cli.tokens import token_counter

    user_ids = _csv(users)
    shard_kn = parse_shard(shard) if shard is not None else None
    if users is not None and not user_ids:
        raise BadInput(f"--users {users!r}: no user ids in it", "omit --users to compress every user")
    if max_tokens < 0:
        raise BadInput(f"--max-tokens {max_tokens}: must be at least 0 (0 = no budget)")
    if not math.isfinite(min_rating):
        raise BadInput(f"--min-rating {min_rating}: expected a number")
    picked: list[tuple[int, str]] = []  # (line, user id) of --in, checked against the store below
    if in_path is not None:
        for line, rec in iter_jsonl(in_path):
            uid = rec.get("user_id")
            if not isinstance(uid, str) or not uid:
                raise BadInput.at(source_name(in_path), line, "user_id must be a non-empty string"
                                  if uid is not None else "missing required field user_id")
            picked.append((line, uid))
        user_ids = (user_ids or []) + [uid for _, uid in picked]
    keep_types = _csv(keep) or []
    counter = token_counter(tokenizer)
    view = None
    if phase is not None and split is None:
        raise BadInput(f"--phase {phase} needs --split", "say which stored split's phase: --split recbole|loo")
    if split_seed is not None and split is None:
        raise BadInput(f"--split-seed {split_seed} needs --split", "say which split: --split recbole|loo")
    if split is not None:
        if ref_date is not None:
            raise BadInput("--date and --split exclude each other", "with --split each user's date is their cut")
        view = SplitView(split, phase or "test")
        _ensure_split(db, split, split_seed)
    con = open_db(db, read_only=True)
    try:
        known = known_user_ids(con) if picked or (shard_kn is not None and not user_ids) else set()
        for line, uid in picked:
            if uid not in known:
                raise BadInput.at(source_name(in_path or "-"), line, f"unknown user_id {uid!r} (not in the --db)")
        if shard_kn is not None:  # [] is "nobody" below, not "everybody"
            user_ids = [u for u in (user_ids or sorted(known)) if in_shard(u, *shard_kn)]
        if ref_date is None:
            reference = default_reference_date(con)
        else:
            try:
                reference = date.fromisoformat(ref_date)
            except ValueError:
                raise BadInput(f"--date: {ref_date!r} is not a date", "use YYYY-MM-DD") from None
        budget = max_tokens or None
        report = compress_stats(con, date=reference, max_tokens=budget, keep_types=keep_types,
                                min_rating=min_rating, user_ids=user_ids, view=view, session_clicks=session_clicks)
        records = compress_users(con, date=reference, max_tokens=budget, keep_types=keep_types,
                                 min_rating=min_rating, user_ids=user_ids, token_counter=counter, view=view,
                                 summary_categories=summary_categories, session_clicks=session_clicks)
    finally:
        con.close()  # other pipeline processes open the same file; everything needed is in memory now
    started = time.perf_counter()
    from rich.progress import Progress

    with jsonl_writer(out) as writer, Progress(console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("compressing users", total=len(records))  # type: ignore[arg-type]
        for user in records:
            writer.write(user.to_record())
            report.add(user)
            progress.advance(task)
    if stats:
        console.print(stats_table(report))
    elif not quiet:
        console.print(
            f"compressed {report.users:,} users up to {report.date} in {time.perf_counter() - started:.1f}s: "
            f"{report.tokens_raw:,} -> {report.tokens_compressed:,} tokens ({report.reduction:.1%} fewer), "
            f"{report.users_truncated:,} truncated to fit " + (f"{budget:,} tokens" if budget else "(no budget)"),
            highlight=False, soft_wrap=True,
        )
