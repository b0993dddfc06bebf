"""`recgpt predict-tags`: mine-interests JSONL in, one record per user with item tags out (§2.2.1)."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from recgpt_cli.commands.common import InOpt, OutOpt, QuietOpt, SeedOpt, SkipBadOpt, console, friendly_errors
from recgpt_cli.commands.interests import InArg, checked_records, input_path, print_summary
from recgpt_cli.commands.llm_options import llm_options
from recgpt_cli.errors import PartialFailure
from recgpt_cli.io import Rejects, rejects_path_for, source_name
from recgpt_cli.llm.options import LLMOptions
from recgpt_cli.schema import InterestsRecord, stage_row
from recgpt_cli.tags import DEFAULT_CONSTRAIN, EXPLORE, MAX_EXPLORE


@friendly_errors
@llm_options()
def predict_tags(
    in_arg: InArg = None,
    in_path: InOpt = "-",
    out: OutOpt = "-",
    n_tags: Annotated[int, typer.Option("--n-tags", help="Tags kept per user (the paper uses 50).")] = 50,
    per_interest: Annotated[bool, typer.Option(
        "--per-interest/--one-call", help="One LLM call per interest (default), or one call for all.")] = True,
    max_tags_per_call: Annotated[int, typer.Option(
        "--max-tags-per-call", min=1, help="Tags asked of one call (small models degrade on long lists).")] = 10,
    db: Annotated[Path | None, typer.Option(
        "--db", help="The store the users came from: turns on the catalogue rules (brand, implausible, invalid).")
    ] = None,
    constrain: Annotated[str, typer.Option(
        "--constrain", help="With --db: interest = the model can only write product phrases that some item's "
        "title carries, in the interest's categories, that the user did not just have; catalogue = any category; "
        "none = free text. The rules still check every tag.")] = DEFAULT_CONSTRAIN,
    explore: Annotated[int, typer.Option(
        "--explore", min=0, max=MAX_EXPLORE,
        help="With --constrain interest: this many more tags per interest, from categories next to the interest's "
             "in the catalogue tree that the user's history never shows (\"explore\": true; outside --n-tags). "
             "0: none.")] = EXPLORE,
    seed: SeedOpt = 0,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
    llm_opts: LLMOptions = LLMOptions(),
) -> None:
    """Predict item tags per user interest with LLM_IT (§2.2.1).

    Reads `recgpt mine-interests` JSONL; adds `tags` [{tag, interest_id, interest, reason}] and `tag_rules_removed`
    (vague, bad_reason, brand, unlinked, implausible, invalid, stale = bought/searched in the last 30 days,
    duplicate, over_cap; brand/implausible/invalid need --db)."""
    from recgpt_cli.align.provenance import serving_check
    from recgpt_cli.interests import default_params
    from recgpt_cli.io import jsonl_writer
    from recgpt_cli.llm.batch import run_batch
    from recgpt_cli.llm.factory import make_llm
    from recgpt_cli.tags import TagPredictor, check_record

    src = input_path(in_arg, in_path)
    day = llm_opts.day()  # None: each record's own `date` (written by compress)
    llm = make_llm(llm_opts, task="tag_prediction")
    # One ceiling for every call: a call asking for fewer tags stops earlier on its own (the schema's maxItems).
    params = llm_opts.sampling(default_params(max(1, min(max_tags_per_call, n_tags)), chars_per_item=190), seed=seed)
    catalogue = None
    check = partial(check_record, has_date=day is not None)
    if db is not None:
        from recgpt_cli.catalogue import Catalogue
        from recgpt_cli.store import connect, known_user_ids

        with connect(db, read_only=True) as con:
            catalogue = Catalogue.from_db(con)
            users = known_user_ids(con)
        check = partial(check_record, has_date=day is not None, known_users=users)
    elif not quiet:
        console.print("predict-tags: no --db, so the catalogue rules (brand, implausible, invalid) and "
                      "--constrain are off")
    predictor = TagPredictor(llm, day, n_tags, per_interest, max_tags_per_call, llm_opts.load_prompt("tag_prediction"),
                             params, catalogue, constrain, explore)
    rejects = Rejects(source_name(src))
    served = serving_check(llm_opts.model)
    records = checked_records(src, (InterestsRecord,), lambda r: check(r) or served(r), skip_bad=skip_bad,
                              rejects=rejects)
    batch = run_batch(records, predictor, desc="predict-tags", quiet=quiet,
                      concurrency=llm.concurrency)
    tally: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    with jsonl_writer(out) as writer:
        for row, gens in batch:
            writer.write(stage_row("tags", row))
            skipped = not gens
            failed = not skipped and "error" in row
            tally.update(users=1, skipped=int(skipped), failed=int(failed), ok=int(not skipped and not failed),
                         kept=len(row["tags"]), unavailable=len(row.get("tags_unavailable") or ()))
            removed.update(row["tag_rules_removed"])
    if len(rejects):
        rejects.write(rejects_path_for(out, src))
    if not quiet:
        print_summary("predict-tags", tally, removed, "tags", batch, rejects, out, src)
        if tally["unavailable"]:
            console.print(f"  {tally['unavailable']} interests had no fresh catalogue product to offer (--constrain "
                          f"{constrain}): no call, listed in tags_unavailable", highlight=False)
    if tally["failed"]:
        raise PartialFailure("predict-tags", tally["failed"], tally["users"], "users")
