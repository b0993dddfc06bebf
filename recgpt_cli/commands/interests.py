"""`recgpt mine-interests`: compress JSONL in, one record per user with mined interests out (§2.1.2)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from recgpt_cli.commands.common import InOpt, OutOpt, QuietOpt, SeedOpt, SkipBadOpt, console, friendly_errors
from recgpt_cli.commands.llm_options import llm_options
from recgpt_cli.errors import BadInput, PartialFailure
from recgpt_cli.interests import DEFAULT_MAX_INTERESTS, MAX_RESAMPLES, RESAMPLES
from recgpt_cli.io import STDIO, Rejects, checked_first, iter_jsonl, rejects_path_for, source_name
from recgpt_cli.llm.options import LLMOptions
from recgpt_cli.schema import CompressedUser, StageRecord, parse_stage_record, stage_row

InArg = Annotated[str | None, typer.Argument(help="Input JSONL, or - for stdin (same as --in).", show_default=False)]


def input_path(in_arg: str | None, in_path: str) -> str:
    """The positional IN or `--in`; both at once must agree."""
    if in_arg is not None and in_path != "-" and in_arg != in_path:
        raise BadInput(f"input given twice ({in_arg!r} and --in {in_path!r}); pass one")
    return in_arg if in_arg is not None else in_path


def checked_records(
    src: str, expect: tuple[type[StageRecord], ...], check: Callable[[dict[str, Any]], str | None], *,
    skip_bad: bool, rejects: Rejects
) -> Iterator[dict[str, Any]]:
    """Input records valid as one of the `expect` stage records (schema.py) that `check` also accepts, as plain
    dicts; a bad one stops with `file:line:` (from a file, before the first record) or, with --skip-bad, is
    rejected."""
    def records() -> Iterator[dict[str, Any]]:
        for line, obj in iter_jsonl(src, skip_bad=skip_bad, rejects=rejects, allow_empty=src == STDIO):
            try:
                record = parse_stage_record(obj, *expect).model_dump(exclude_none=True)
                problem = check(record)
            except ValueError as exc:
                problem = str(exc)
            if problem is None:
                yield record
            elif skip_bad:
                rejects.add(line, problem, orjson.dumps(obj).decode()[:500])
            else:
                raise BadInput.at(source_name(src), line, problem, "use --skip-bad to set such lines aside")

    return checked_first(records, src, skip_bad=skip_bad)


def print_summary(stage: str, rows: Counter[str], removed: Counter[str], kept_name: str, batch: Any,
                  rejects: Rejects, out: str, src: str) -> None:
    """One stderr summary: users, ok, failed, skipped, what the rules removed, tokens and time."""
    s = batch.stats
    rules = ", ".join(f"{k} {v}" for k, v in removed.items()) or "none"
    console.print(
        f"[bold]{stage}[/]: {rows['users']} users, {rows['ok']} ok, {rows['failed']} failed, "
        f"{rows['skipped']} skipped · {rows['kept']} {kept_name} kept · removed: {rules} · "
        + (f"asked again: {rows['resampled']} users · " if rows["resampled"] else "") +
        f"{s.calls} calls ({s.calls_cached} cached), {s.prompt_tokens}+{s.completion_tokens} tokens, "
        f"{s.seconds:.1f}s, {s.completion_tokens_per_s:.1f} gen tok/s",
        highlight=False, soft_wrap=True,
    )
    if len(rejects):
        console.print(f"  {len(rejects)} bad input lines skipped -> {rejects_path_for(out, src)}", highlight=False)


@friendly_errors
@llm_options()
def mine_interests(
    in_arg: InArg = None,
    in_path: InOpt = "-",
    out: OutOpt = "-",
    interest_pool: Annotated[Path | None, typer.Option(
        "--interest-pool", help="Preset interests, one a line; close matches are renamed to them.")] = None,
    max_interests: Annotated[int, typer.Option("--max-interests", help="Interests kept per user.")
                             ] = DEFAULT_MAX_INTERESTS,
    resamples: Annotated[int, typer.Option(
        "--resamples", min=0, max=MAX_RESAMPLES,
        help="Ask a user again (new seed, temperature 0.7) while the rules remove an interest of the reply as "
             "vague, unsupported or with a bad reason (a decoding loop, a placeholder), at most this many times; "
             "the reply keeping the most interests is served. 0: one greedy ask.")] = RESAMPLES,
    seed: SeedOpt = 0,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
    llm_opts: LLMOptions = LLMOptions(),
) -> None:
    """Mine each user's interests from compressed behaviour with LLM_UI (§2.1.2).

    Reads `recgpt compress` JSONL; writes it back with `interests` [{interest_id, interest, stage, reason}] and
    `interest_rules_removed` (vague, unsupported = hallucination check, bad_reason = placeholder, copied or
    looping reason, duplicate, over_cap) and `interest_resamples` (extra asks after a reply the first three
    rules removed an interest from)."""
    from recgpt_cli.align.provenance import serving_check
    from recgpt_cli.interests import InterestMiner, check_record, default_params, load_interest_pool
    from recgpt_cli.io import jsonl_writer
    from recgpt_cli.llm.batch import run_batch
    from recgpt_cli.llm.factory import make_llm

    src = input_path(in_arg, in_path)
    day = llm_opts.day()  # None: each record's own `date` (written by compress)
    pool = load_interest_pool(interest_pool) if interest_pool else None
    llm = make_llm(llm_opts, task="interest_mining")
    miner = InterestMiner(llm, day, pool, max_interests, llm_opts.load_prompt("interest_mining"),
                          llm_opts.sampling(default_params(max_interests, chars_per_item=230), seed=seed),
                          resamples)
    rejects = Rejects(source_name(src))
    check, served = partial(check_record, has_date=day is not None), serving_check(llm_opts.model)
    records = checked_records(src, (CompressedUser,), lambda r: check(r) or served(r), skip_bad=skip_bad,
                              rejects=rejects)
    batch = run_batch(records, miner, desc="mine-interests", quiet=quiet,
                      concurrency=llm.concurrency)
    tally: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    with jsonl_writer(out) as writer:
        for row, _gens in batch:
            writer.write(stage_row("interests", row))
            tally.update(users=1, failed=int("error" in row), ok=int("error" not in row), kept=len(row["interests"]),
                         resampled=int(row.get("interest_resamples", 0) > 0))
            removed.update(row["interest_rules_removed"])
    if len(rejects):
        rejects.write(rejects_path_for(out, src))
    if not quiet:
        print_summary("mine-interests", tally, removed, "interests", batch, rejects, out, src)
    if tally["failed"]:
        raise PartialFailure("mine-interests", tally["failed"], tally["users"], "users")
