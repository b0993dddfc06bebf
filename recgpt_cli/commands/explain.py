"""`recgpt explain`: build the Interest-Item-Explanation table (§2.4.2) or explain recommendations."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from recgpt_cli.commands.common import (
    DbOpt,
    InOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SkipBadOpt,
    console,
    friendly_errors,
)
from recgpt_cli.commands.llm_options import LLMOptions, llm_options
from recgpt_cli.errors import BadInput, PartialFailure
from recgpt_cli.io import STDIO, Rejects, checked_first, iter_jsonl, jsonl_writer, rejects_path_for, source_name
from recgpt_cli.schema import InterestsRecord, Recommendation, TagsRecord, parse_stage_record, stage_row
from recgpt_cli.store import connect, known_user_ids

InArg = Annotated[str | None, typer.Argument(help="Retrieve output JSONL (or - for stdin); same as --in.")]


@friendly_errors
@llm_options()
def explain(
    in_arg: InArg = None,
    db: DbOpt = Path("recgpt.duckdb"),
    in_path: InOpt = "-",
    out: OutOpt = "-",
    interests: Annotated[Path, typer.Option("--interests", help="mine-interests or predict-tags JSONL.")] = Path(
        "interests.jsonl"),
    build_table: Annotated[bool, typer.Option("--build-table", help="Build the lookup table and stop.")] = False,
    table_out: Annotated[Path | None, typer.Option("--table-out", help="Also write table rows here (JSONL).")] = None,
    table: Annotated[Path | None, typer.Option("--table", help="Look up this table JSONL instead of the DB.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="table: lookup (§2.4.2); llm: one LLM call per item.")] = "table",
    k: Annotated[int, typer.Option("--k", min=1, help="Categories per tag/interest when building the table.")] = 3,
    seed: SeedOpt = 0,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
    llm_opts: LLMOptions = LLMOptions(),
) -> None:
    """Short personalised explanation per recommended item with LLM_RE (§2.4)."""
    from recgpt_cli import explain as ex
    from recgpt_cli.llm.factory import make_llm

    if mode not in ("table", "llm"):
        raise BadInput(f"--mode must be table or llm, not {mode!r}")
    t0 = time.perf_counter()
    src = in_arg if in_arg is not None else in_path
    if str(interests) == STDIO and str(src) == STDIO and not build_table:
        raise BadInput("the recommendations and --interests both read stdin (-); give a file for one of them")
    rejects = Rejects(source_name(interests))
    users = {}
    for line, rec in iter_jsonl(interests, skip_bad=skip_bad, rejects=rejects):
        try:
            u = ex.parse_user_interests(
                parse_stage_record(rec, InterestsRecord, TagsRecord).model_dump(exclude_none=True))
        except ValueError as exc:
            if not skip_bad:
                raise BadInput.at(str(interests), line, str(exc)) from None
            rejects.add(line, str(exc), orjson.dumps(rec).decode())
            continue
        users[u.user_id] = u
    params = llm_opts.sampling(ex.EXPLAIN_PARAMS, seed=seed)
    tmpl = llm_opts.load_prompt("explanation")
    day = str(llm_opts.day()) if llm_opts.day() else "not given"
    stats = ex.ExplainStats()
    if build_table:
        llm = make_llm(llm_opts, task="explanation")
        with jsonl_writer(table_out) if table_out else contextlib.nullcontext() as w:
            rows = ex.build_explanation_table(db, users.values(), llm, date=day, prompt=tmpl, params=params, k=k,
                                              table_out=w, stats=stats, quiet=quiet)
        _summary(quiet, stats, time.perf_counter() - t0, rejects, f"table rows written: {len(rows)}",
                 rejects_path_for(out, interests))
        _write_rejects(rejects, out, interests)
        if stats.pairs_failed:  # stored rows are kept; the failed pairs are asked again on a rerun
            raise PartialFailure("explain --build-table", stats.pairs_failed, stats.pairs - stats.pairs_existing,
                                 "interest x category pairs", "no table row: every call failed")
        return
    items = ex.load_items(db)
    with connect(db, read_only=True) as con:
        known_users = known_user_ids(con)
    kwargs: dict[str, Any] = {}
    if mode == "table":
        kwargs["table"] = ex.load_table(db, table)
    else:
        kwargs["llm"] = make_llm(llm_opts, task="explanation")
        kwargs["matcher"], _ = ex.default_matcher(items)
    rec_rejects = Rejects(source_name(src))

    def recs() -> Iterator[dict[str, Any]]:
        for line, rec in iter_jsonl(src, skip_bad=skip_bad, rejects=rec_rejects, allow_empty=src == STDIO):
            err = _check_rec(rec, items, known_users)
            if err:
                if not skip_bad:
                    raise BadInput.at(source_name(src), line, err)
                rec_rejects.add(line, err, orjson.dumps(rec).decode())
                continue
            yield rec

    with jsonl_writer(out) as w:
        checked = checked_first(recs, src, skip_bad=skip_bad)  # a file: every line before the first call
        for row in ex.explain_recommendations(checked, items=items, users=users, mode=mode, date=day, prompt=tmpl,
                                              params=params, stats=stats, quiet=quiet, **kwargs):
            w.write(stage_row("explanation", row))
    rejects.rows.extend(rec_rejects.rows)
    _summary(quiet, stats, time.perf_counter() - t0, rejects, f"explanations written: {stats.n}",
             rejects_path_for(out, src))
    _write_rejects(rejects, out, src)
    failed = stats.by_source.get(ex.LLM_ERROR_SOURCE, 0)
    if failed:  # written with the item-only fallback; failed calls are not cached, so a rerun asks again
        raise PartialFailure("explain", failed, stats.n, "recommendations",
                             f"written with the item-only fallback, source {ex.LLM_ERROR_SOURCE!r}")


def _check_rec(rec: dict[str, Any], items: dict[str, Any], users: set[str]) -> str | None:
    try:
        parse_stage_record(rec, Recommendation)
    except ValueError as exc:
        return str(exc)
    if str(rec["item_id"]) not in items:
        return f"unknown item_id {rec['item_id']!r} (not in the --db items table)"
    if str(rec["user_id"]) not in users:
        return f"unknown user_id {rec['user_id']!r} (not in the --db users or behaviours)"
    return None


def _write_rejects(rejects: Rejects, out: str, fallback: Any) -> None:
    if len(rejects):
        rejects.write(rejects_path_for(out, fallback))


def _summary(quiet: bool, stats: Any, seconds: float, rejects: Rejects, head: str, rejects_at: Path) -> None:
    if quiet:
        return
    d = stats.as_dict()
    console.print(
        f"[bold]explain[/]: {head}; by source {d['by_source'] or {}}; pairs {d['pairs']} "
        f"(already stored {d['pairs_existing']}); LLM calls {d['llm_calls']}, regenerated {d['regenerated']}, "
        f"dropped {d['dropped']}, LLM errors {d['llm_errors']}; safety failures {d['safety_failures'] or {}}; "
        f"tokens {d['prompt_tokens']}+{d['completion_tokens']}; bad lines skipped {len(rejects)}"
        f"{f' -> {rejects_at}' if len(rejects) else ''}; {seconds:.1f}s",
        highlight=False, soft_wrap=True)

