"""`recgpt align ...`: build alignment samples, fine-tune, export (RecGPT §2.1.2, §2.2.2; library: recgpt_cli/align)."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from recgpt_cli.align.data import LogsConfig
from recgpt_cli.commands.common import BufferOpt, DbOpt, QuietOpt, SeedOpt, console, friendly_errors, user_list
from recgpt_cli.errors import PartialFailure
from recgpt_cli.tags import DEFAULT_CONSTRAIN

app = typer.Typer(help="Align the stage LLMs: samples from logs, supervised fine-tuning (LoRA), GGUF export.",
                  no_args_is_help=True)

SamplesOpt = Annotated[Path, typer.Option("--samples", help="Sample store: DuckDB file (or a .jsonl export).")]


@app.command("data")
@friendly_errors
def data(
    db: DbOpt = Path("recgpt.duckdb"),
    source: Annotated[str, typer.Option("--source", help="logs (the paper's incremental-learning recipe), teacher "
                                        "(a stronger model's answers that pass the rules), curriculum (Appendix "
                                        "C's foundation/intermediate/advanced tasks from the catalogue and searches) "
                                        "or labels (judge samples from the judge label buffer, --task judge).")
                  ] = "logs",
    buffer: BufferOpt = Path("judge_labels.duckdb"),
    max_per_class: Annotated[int, typer.Option("--max-per-class", min=1, help="labels: per task and class (pass / "
                                               "fail), the newest labels kept.")] = 600,
    heldout_share: Annotated[float, typer.Option("--heldout-share", min=0.0, max=0.9, help="labels: share of users "
                                                 "kept out of training, written next to --samples for `judge "
                                                 "check`.")] = 0.2,
    teacher_backend: Annotated[str, typer.Option("--teacher-backend", help="teacher: llama-cpp, hf or openai.")
                               ] = "openai",
    teacher_model: Annotated[str | None, typer.Option("--teacher-model", help="teacher: a .gguf, a model dir, or "
                                                      "the model name sent to the server.")] = None,
    teacher_base_url: Annotated[str | None, typer.Option("--teacher-base-url", help="teacher: OpenAI-compatible "
                                                         "server URL (vLLM, llama-server).")] = None,
    judge_model: Annotated[Path | None, typer.Option("--judge-model", help="teacher: a trained judge that must also "
                                                     "pass each kept answer, used only when it beats the rules on "
                                                     "--judge-heldout.")] = None,
    judge_heldout: Annotated[Path | None, typer.Option("--judge-heldout", help="teacher: held-out tag labels the "
                                                       "judge must agree with better than the rules.")] = None,
    task: Annotated[list[str], typer.Option("--task", help="interests and/or tags (repeat the option); "
                                            "explanations with --source teacher; judge with --source labels; with "
                                            "--source curriculum a subtask, a level (foundation, intermediate, "
                                            "advanced) or curriculum (all, the default).")] = [  # noqa: B006
        "interests", "tags"],
    samples: SamplesOpt = Path("align/samples.duckdb"),
    jsonl: Annotated[str | None, typer.Option("--jsonl", help="Also write the new samples as JSONL (- = stdout).")
                     ] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="Stored split whose train part the samples come from "
                                          "(made if missing).")] = "loo",
    exclude_users: Annotated[Path | None, typer.Option(
        "--exclude-users", help="File with user ids (one a line) never to sample: the users an evaluation scores.")
    ] = None,
    cuts: Annotated[int, typer.Option("--cuts", min=1, help="Cut points per user in the train history.")
                    ] = LogsConfig.cuts,
    window_days: Annotated[int, typer.Option("--window-days", min=1, help="Targets: engagements this many days "
                                             "after the cut.")] = LogsConfig.window_days,
    since: Annotated[str | None, typer.Option("--since", help="logs: a slice of the logs (incremental learning, "
                                              "§2.2.2): only cut points on or after this date (YYYY-MM-DD).")
                     ] = None,
    until: Annotated[str | None, typer.Option("--until", help="logs: nothing on or after this date (YYYY-MM-DD), "
                                              "cut points and targets alike.")] = None,
    max_interests: Annotated[int, typer.Option("--max-interests", min=1, max=8, help="Interests per user, as "
                                               "mine-interests --max-interests.")] = LogsConfig.max_interests,
    interest_rank: Annotated[str, typer.Option("--interest-rank", help="logs: rank a user's categories by count "
                                               "behind the newest engagement's (newest), by count, or by a "
                                               "recency-weighted count (recency: each engagement 0.9^newer ones).")
                             ] = LogsConfig.interest_rank,
    tags_per_call: Annotated[int, typer.Option("--tags-per-call", min=1, max=10, help="Tags per interest, as "
                                               "predict-tags --max-tags-per-call.")] = LogsConfig.tags_per_call,
    history_tokens: Annotated[int, typer.Option("--history-tokens", min=16, help="compress --max-tokens.")
                              ] = LogsConfig.history_tokens,
    max_users: Annotated[int | None, typer.Option("--max-users", min=1, help="A seeded sample of users.")] = None,
    max_per_category: Annotated[int, typer.Option("--max-per-category", min=1, help="curriculum: samples per "
                                                  "subtask and category (a query's Yes/No pair counts once).")
                                ] = 10,
    session_minutes: Annotated[int, typer.Option("--session-minutes", min=1, help="curriculum: engagements this "
                                                 "long after a search (and before the next) belong to it.")] = 60,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Build chat samples rendered with the stages' own prompt files (train = serve) and store them."""
    from recgpt_cli.align.data import INTEREST_RANKS, build_from_logs
    from recgpt_cli.align.samples import open_samples, record_pass_rate, save_samples, unique_samples
    from recgpt_cli.errors import BadInput
    from recgpt_cli.io import jsonl_writer
    from recgpt_cli.splits import ensure_split
    from recgpt_cli.store import connect

    if source not in ("logs", "teacher", "curriculum", "labels"):
        raise BadInput(f"--source {source}: expected logs, teacher, curriculum or labels")
    if source == "labels" or "judge" in task:
        _judge_data(buffer, task, samples, jsonl, max_per_class, heldout_share, quiet)
        return
    if source == "curriculum" and max_users is not None:
        raise BadInput("--max-users samples users for logs and teacher", "the curriculum's size is set by "
                       "--max-per-category")
    counts: dict[str, dict[str, int]] = {}
    rates: list[tuple[str, Any]] = []
    if interest_rank not in INTEREST_RANKS:
        raise BadInput(f"--interest-rank {interest_rank}: expected one of {', '.join(INTEREST_RANKS)}")
    if source == "curriculum" and (since or until):
        raise BadInput("--since/--until slice the logs of --source logs and teacher")
    cfg = LogsConfig(protocol=protocol, cuts=cuts, window_days=window_days, max_interests=max_interests,
                     interest_rank=interest_rank, tags_per_call=tags_per_call, history_tokens=history_tokens,
                     seed=seed, max_users=max_users, since=_day(since, "--since"), until=_day(until, "--until"))
    with connect(db, create=False) as con:
        excluded = user_list(exclude_users, con)
        ensure_split(con, protocol)
        if source == "logs":
            built = list(build_from_logs(con, task, cfg, exclude=excluded))
        elif source == "curriculum":
            from recgpt_cli.align.curriculum import CurriculumConfig, build_curriculum

            wanted = ["curriculum"] if task == ["interests", "tags"] else task  # the option's default: all of it
            built, counts = build_curriculum(con, wanted, CurriculumConfig(protocol, session_minutes,
                                                                            max_per_category), exclude=excluded)
        else:
            judge = _judge_gate(judge_model, judge_heldout, quiet)
            built, rates = _teacher_samples(con, task, cfg, excluded, teacher_backend, teacher_model,
                                            teacher_base_url, quiet, judge)
    store = open_samples(samples)
    try:
        built, repeats = unique_samples(built)
        new, known = save_samples(store, built)
        for t, stats in rates:
            record_pass_rate(store, source="teacher", task=t, model=teacher_model, stats=stats)
    finally:
        store.close()
    if jsonl is not None:
        with jsonl_writer(jsonl) as w:
            for s in built:
                w.write(s.to_json())
    if not quiet:
        for t, c in counts.items():
            console.print(f"curriculum {t}: {c['built']} built, {c['kept']} kept after balancing", highlight=False)
        by_task: dict[str, int] = {}
        for s in built:
            by_task[s.task] = by_task.get(s.task, 0) + 1
        console.print(f"{samples}: {new} new samples ({known} already stored, {repeats} repeats kept once); "
                      + ", ".join(f"{k} {v}" for k, v in sorted(by_task.items())))
    failed_calls = sum(stats.failed_calls for _, stats in rates)
    if failed_calls:  # a teacher that fails every call must not look like one whose answers all fail the rules
        raise PartialFailure("align data", failed_calls, sum(stats.answers for _, stats in rates), "teacher calls",
                             "their inputs made no sample; the others are stored")


def _day(value: str | None, option: str) -> datetime | None:
    """A YYYY-MM-DD option as the start of that day (engagement times are naive, as stored)."""
    from recgpt_cli.errors import BadInput

    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time())
    except ValueError:
        raise BadInput(f"{option}: {value!r} is not a date", "use YYYY-MM-DD") from None


def _judge_data(buffer: Path, task: list[str], samples: Path, jsonl: str | None, max_per_class: int,
                heldout_share: float, quiet: bool) -> None:
    """`align data --source labels --task judge`: judge samples from the label buffer (§3.2), held-out users
    written as `judge-heldout-<task>.jsonl` beside the sample store."""
    from recgpt_cli.align.samples import open_samples, save_samples, unique_samples
    from recgpt_cli.errors import BadInput
    from recgpt_cli.io import jsonl_writer
    from recgpt_cli.judge.buffer import open_buffer
    from recgpt_cli.judge.training import JudgeDataConfig, heldout_record, samples_from_buffer

    if task != ["judge"] and task != ["interests", "tags"]:
        raise BadInput(f"--source labels builds judge samples: use --task judge, not {' '.join(task)}")
    if not buffer.is_file():
        raise BadInput(f"{buffer}: no such label buffer", "label with `recgpt judge annotate` or `recgpt judge derive`")
    con = open_buffer(buffer)
    try:
        built, held, counts = samples_from_buffer(con, ("interests", "tags", "explanations"),
                                                  JudgeDataConfig(heldout_share=heldout_share,
                                                                  max_per_class=max_per_class))
    finally:
        con.close()
    if not built:
        raise BadInput(f"{buffer}: no fully labelled samples", "label some first (recgpt judge annotate / derive)")
    built, repeats = unique_samples(built)
    store = open_samples(samples)
    try:
        new, known = save_samples(store, built)
    finally:
        store.close()
    for t, rows in held.items():
        with jsonl_writer(str(Path(samples).parent / f"judge-heldout-{t}.jsonl")) as w:
            for r in rows:
                w.write(heldout_record(r))
    if jsonl is not None:
        with jsonl_writer(jsonl) as w:
            for s in built:
                w.write(s.to_json())
    if not quiet:
        for t, c in counts.items():
            console.print(f"judge {t}: {c['rows']} labelled, {c['heldout']} held out, {c['kept']} kept (newest per "
                          f"class), {c['augmented']} minority variants -> {c['samples']} samples "
                          f"({c['pass']} pass / {c['fail']} fail)", highlight=False)
        console.print(f"{samples}: {new} new samples ({known} already stored, {repeats} repeats kept once); "
                      "held-out labels in "
                      f"{Path(samples).parent}/judge-heldout-<task>.jsonl", highlight=False)


def _teacher_samples(con: object, tasks: list[str], cfg: object, excluded: list[str], backend: str,
                     model: str | None, base_url: str | None, quiet: bool, judge: Any = None
                     ) -> tuple[list, list[tuple[str, Any]]]:
    """§2.1.2 stage 2: the teacher answers each input once (temperature 0); answers the rules (and the judge, when
    given) pass become samples. Returns them and each task's pass counts."""
    from recgpt_cli.align.data import log_contexts
    from recgpt_cli.align.self_train import ExplainInputs, rejection_samples
    from recgpt_cli.catalogue import Catalogue
    from recgpt_cli.errors import BadInput
    from recgpt_cli.llm.factory import make_llm
    from recgpt_cli.llm.options import LLMOptions
    from recgpt_cli.tokens import token_counter

    try:
        llm = make_llm(LLMOptions(backend=backend, model=model, base_url=base_url), task="align_teacher")
    except BadInput as exc:  # the stage options' names are --teacher-* here
        rename = (("--backend", "--teacher-backend"), ("--model", "--teacher-model"),
                  ("--base-url", "--teacher-base-url"))
        msg, hint = exc.message, exc.hint or ""
        for old, new in rename:
            msg, hint = msg.replace(old, new), hint.replace(old, new)
        raise BadInput(msg, hint or None) from None
    contexts = list(log_contexts(con, cfg, exclude=excluded, token_counter=token_counter()))  # type: ignore[arg-type]
    catalogue = Catalogue.from_db(con)  # type: ignore[arg-type]
    explain_inputs = ExplainInputs.from_con(con) if "explanations" in tasks else None  # type: ignore[arg-type]
    out, rates = [], []
    for t in tasks:
        samples, stats = rejection_samples(contexts, llm, task=t, k=1, temperature=0.0, config=cfg,  # type: ignore
                                           catalogue=catalogue, source="teacher", explain_inputs=explain_inputs,
                                           judge=judge)
        out += samples
        rates.append((t, stats))
        if not quiet:
            failed = f"; {stats.failed_calls} calls failed (no answer)" if stats.failed_calls else ""
            console.print(f"teacher {t}: {stats.passed}/{stats.answers} answers pass the rules"
                          f"{' and the judge' if judge else ''} ({stats.pass_rate:.1%}); removed {stats.removed}"
                          f"{failed}")
    return out, rates


@app.command("sft")
@friendly_errors
def sft(
    samples: SamplesOpt = Path("align/samples.duckdb"),
    out: Annotated[Path, typer.Option("--out", help="Output dir: adapter/, hf/, model.gguf, checkpoint/.")] = Path(
        "models/aligned"),
    base: Annotated[str | None, typer.Option(
        "--from", help="Base: a .gguf, a transformers dir, or an aligned model dir (incremental learning). "
        "Default: the embedded SmolLM2-135M.")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="Train only these tasks (repeatable).")] = None,
    method: Annotated[str, typer.Option("--method", help="lora or full.")] = "lora",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N steps (quick runs).")
                         ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 4,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default 5e-4 LoRA, 2e-5 full).")] = None,
    lora_r: Annotated[int, typer.Option("--lora-r", min=1)] = 16,
    max_length: Annotated[int, typer.Option("--max-length", min=32, help="Tokens per sample; longer ones are "
                                            "skipped and counted.")] = 1024,
    stages: Annotated[str | None, typer.Option(
        "--stages", help="Curriculum: task groups trained in order, e.g. 'interest_mining;tag_prediction'.")] = None,
    curriculum: Annotated[str | None, typer.Option(
        "--curriculum", help="Curriculum order file: a name in presets/curriculum (appendix-c) or a .toml; its "
        "stages are trained in order (instead of --stages).")] = None,
    save_every: Annotated[int, typer.Option("--save-every", min=1, help="Checkpoint every N steps.")] = 20,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0: torch's default).")] = 0,
    precision: Annotated[str, typer.Option("--precision", help="auto (bf16 autocast on CUDA and on CPUs with native "
                                           "bf16, else fp32), bf16 or fp32.")] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing", help="Recompute activations in the backward pass: ~2.3x less memory, ~1.5x the "
        "time (for machines with little RAM).")] = False,
    gguf_type: Annotated[str, typer.Option("--gguf-type", help="q8_0, f16 or f32.")] = "q8_0",
    export: Annotated[bool, typer.Option("--export/--no-export", help="Merge and write hf/ + model.gguf (off: "
                                         "adapter only; `recgpt align export` later).")] = True,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Where the base GGUF is converted once "
                                                   "(default: $RECGPT_CACHE_DIR or .recgpt-cache).")] = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Supervised fine-tuning on alignment samples (LoRA by default); Ctrl-C or a kill resumes on rerun."""
    from recgpt_cli.align.samples import load_samples
    from recgpt_cli.align.sft import SFTConfig, train_sft
    from recgpt_cli.errors import BadInput

    if stages and curriculum:
        raise BadInput("--stages and --curriculum both give the stage order: use one")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise BadInput(f"--lr {lr}: expected a positive number")
    groups = [[t.strip() for t in g.split(",") if t.strip()] for g in stages.split(";")] if stages else []
    if curriculum:
        from recgpt_cli.align.curriculum import load_order

        groups = [list(st.tasks) for st in load_order(curriculum)]
    cfg = SFTConfig(method=method, lora_r=lora_r, lora_alpha=2 * lora_r,
                    lr=lr if lr is not None else (5e-4 if method == "lora" else 2e-5), epochs=epochs,
                    max_steps=max_steps, batch_size=batch_size, max_length=max_length, seed=seed,
                    save_every=save_every, device=device, threads=threads or None, precision=precision,
                    gradient_checkpointing=gradient_checkpointing, gguf_type=gguf_type, stages=groups)
    data = load_samples(samples, tasks=task)
    if task and not data:  # say what the file holds rather than "no samples"
        held = sorted({s.task for s in load_samples(samples)})
        raise BadInput(f"{samples}: no samples of --task {', '.join(task)} (it holds: {', '.join(held) or 'none'})",
                       "give tasks the file holds: interests, tags, explanations, judge or a curriculum task")
    staged, tasks_held = {t for g in groups for t in g}, {s.task for s in data}
    if groups and not staged & tasks_held:  # said here, not "every sample is outside --stages" after the tokenising
        raise BadInput(f"--stages/--curriculum: no samples of any task it names ({', '.join(sorted(staged))}); "
                       f"the samples hold: {', '.join(sorted(tasks_held)) or 'none'}")

    def show(entry: dict) -> None:
        if not quiet and (entry["step"] % 5 == 0 or entry["step"] == entry["of"]):
            console.print(f"step {entry['step']}/{entry['of']} loss {entry['loss']:.4f} "
                          f"{entry['tokens_per_s']:.0f} tok/s", highlight=False)

    r = train_sft(data, out, cfg, base=base, cache_dir=_cache_dir(cache_dir), export=export, progress=show)
    if not quiet:
        console.print(f"{out}: {r.steps} steps on {r.samples} samples ({r.skipped_long} too long), loss "
                      f"{r.first_loss:.3f} -> {r.last_loss:.3f}, {r.train_s:.0f}s, {r.tokens_per_s:.0f} tok/s, "
                      f"peak {r.peak_memory_mb:.0f} MB" + (f", resumed at step {r.resumed_from}" if r.resumed_from
                                                            else ""))


@app.command("export")
@friendly_errors
def export(
    out: Annotated[Path, typer.Argument(help="An `align sft` output dir with adapter/ (or hf/).")],
    base: Annotated[str | None, typer.Option("--from", help="The base the adapter was trained on (default: the "
                                             "embedded model).")] = None,
    gguf_type: Annotated[str, typer.Option("--gguf-type", help="q8_0, f16 or f32.")] = "q8_0",
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Where the base GGUF is converted once "
                                                   "(default: $RECGPT_CACHE_DIR or .recgpt-cache).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Merge a trained adapter into its base and write hf/ + model.gguf (serve with --model DIR)."""
    from recgpt_cli.align.sft import export_trained

    export_trained(out, base=base, cache_dir=_cache_dir(cache_dir), gguf_type=gguf_type)
    if not quiet:
        console.print(f"{out}: wrote hf/ and model.gguf")


def _cache_dir(given: Path | None) -> Path:
    """The LLM stages' cache folder (`--cache-dir`, else $RECGPT_CACHE_DIR, else .recgpt-cache)."""
    from recgpt_cli.llm.options import LLMOptions

    return LLMOptions(cache_dir=given).resolved_cache_dir()


def _judge_gate(judge_model: Path | None, heldout: Path | None, quiet: bool) -> Any:
    """The trained judge as a rejection filter, or None when none is given or it does not beat the rules."""
    from recgpt_cli.align.self_train import judge_beats_rules, judge_filter
    from recgpt_cli.commands.llm_options import LLMOptions
    from recgpt_cli.errors import BadInput
    from recgpt_cli.io import iter_jsonl
    from recgpt_cli.judge.head import HeadJudge, is_head_dir, load_head_dir
    from recgpt_cli.llm.factory import make_llm

    if judge_model is None:
        return None
    if heldout is None or not heldout.is_file():
        raise BadInput("--judge-model needs --judge-heldout FILE (held-out tag labels) to show it beats the rules")
    # An aligned judge model (align sft --task judge) or a head dir (judge train --out).
    llm = (HeadJudge(load_head_dir(judge_model), LLMOptions().resolved_cache_dir()) if is_head_dir(judge_model)
           else make_llm(LLMOptions(model=str(judge_model)), task="judge"))
    rows = [rec for _, rec in iter_jsonl(heldout)]
    better, accs = judge_beats_rules(llm, rows, "tags")  # type: ignore[arg-type]
    if not quiet:
        console.print(f"judge {judge_model}: ACC {accs['judge_acc']:.3f} vs rules {accs['rules_acc']:.3f} on "
                      f"{len(rows)} held-out labels -> " + ("filtering with it" if better else "not used"),
                      highlight=False)
    return judge_filter(llm) if better else None  # type: ignore[arg-type]


@app.command("self-train")
@friendly_errors
def self_train(
    db: DbOpt = Path("recgpt.duckdb"),
    model: Annotated[Path, typer.Option("--model", help="The aligned model dir to start from (align sft --out).")
                     ] = Path("models/aligned"),
    samples: SamplesOpt = Path("align/samples.duckdb"),
    out: Annotated[Path, typer.Option("--out", help="Round r's model goes to OUT/round-r.")] = Path(
        "models/self-train"),
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="At most this many rounds; stops early when a "
                                        "round's rule pass rate does not improve.")] = 2,
    k: Annotated[int, typer.Option("--k", min=1, max=16, help="Answers per input (temperature 0.7).")] = 4,
    judge_model: Annotated[Path | None, typer.Option("--judge-model", help="A trained judge (align sft --task "
                                                     "judge, or a head dir from judge train) that must also pass "
                                                     "each kept answer, used only when it beats the rules on "
                                                     "--judge-heldout.")] = None,
    judge_heldout: Annotated[Path | None, typer.Option("--judge-heldout", help="Held-out tag labels (gold format, "
                                                       "e.g. judge-heldout-tags.jsonl from `align data --source "
                                                       "labels`) the judge must agree with better than the rules."
                                                       )] = None,
    task: Annotated[list[str], typer.Option("--task", help="interests, tags and/or explanations.")] = [  # noqa: B006
        "interests", "tags"],
    protocol: Annotated[str, typer.Option("--protocol", help="Split whose train part gives the inputs.")] = "loo",
    exclude_users: Annotated[Path | None, typer.Option("--exclude-users", help="User ids never to use.")] = None,
    max_users: Annotated[int | None, typer.Option("--max-users", min=1, help="A seeded sample of users.")] = 50,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="SFT steps per round.")] = None,
    pool: Annotated[bool, typer.Option("--pool/--whole", help="Tags: keep every tag the rules pass from the k "
                                       "answers to an input (--pool), or only answers whose every tag passes "
                                       "(--whole, the strict form).")] = True,
    constrain: Annotated[str, typer.Option("--constrain", help="Tags: decode as `predict-tags --constrain` "
                                           "serves them (catalogue, interest or none).")] = DEFAULT_CONSTRAIN,
    on_topic: Annotated[bool, typer.Option("--on-topic/--any-topic", help="Explanations: keep only answers that "
                                           "name a word of their interest or item, besides passing the safety "
                                           "rules.")] = True,
    device: Annotated[str, typer.Option("--device")] = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Rejection-sampling self-training (§2.1.2 stage 3): generate k answers, keep those the rules pass, retrain."""
    from recgpt_cli.align.data import log_contexts
    from recgpt_cli.align.samples import load_samples, open_samples, record_pass_rate, save_samples
    from recgpt_cli.align.self_train import ExplainInputs, RoundStats
    from recgpt_cli.align.self_train import self_train as run_rounds
    from recgpt_cli.align.sft import SFTConfig, train_sft
    from recgpt_cli.catalogue import Catalogue
    from recgpt_cli.errors import BadInput
    from recgpt_cli.llm.factory import make_llm
    from recgpt_cli.llm.options import LLMOptions
    from recgpt_cli.store import connect
    from recgpt_cli.tokens import token_counter

    if not (model / "manifest.json").exists():
        raise BadInput(f"{model}: not an aligned model dir", "train one with `recgpt align sft` first")
    sft_cfg = SFTConfig(max_steps=max_steps, device=device, seed=seed)  # checks --device before round 1 generates
    cfg = LogsConfig(protocol=protocol, max_users=max_users, seed=seed)
    with connect(db, create=False, read_only=True) as con:
        excluded = user_list(exclude_users, con)
        contexts = list(log_contexts(con, cfg, exclude=excluded, token_counter=token_counter()))
        catalogue = Catalogue.from_db(con)
        explain_inputs = ExplainInputs.from_con(con) if "explanations" in task else None
    base = [s for s in load_samples(samples) if s.source != "self-train"] if samples.exists() else []

    def train(data: list, from_model: Path, out_dir: Path) -> Path:
        save_samples(store, [s for s in data if s.source == "self-train"])  # kept with their round, for audits
        train_sft(data, out_dir, sft_cfg, base=from_model)
        return out_dir

    def report(stats: RoundStats) -> None:
        record_pass_rate(store, source="self-train", task=",".join(task), model=None, stats=stats)
        if not quiet:
            tags = (f", {stats.kept_items}/{stats.items} tags ({stats.item_pass_rate:.1%})" if stats.items
                    else "")
            console.print(f"round {stats.round}: {stats.passed}/{stats.answers} answers pass the rules "
                          f"({stats.pass_rate:.1%}){tags}, {stats.samples} new samples; removed {stats.removed}")

    judge = _judge_gate(judge_model, judge_heldout, quiet)
    store = open_samples(samples)
    try:
        def llm_for(path: Path) -> object:
            return make_llm(LLMOptions(model=str(path)), task="align_self_train")

        result = run_rounds(lambda: contexts, model, out, make_llm=llm_for, train=train,  # type: ignore[arg-type]
                            base_samples=base, tasks=task, rounds=rounds, k=k, config=cfg, catalogue=catalogue,
                            on_round=report, judge=judge, explain_inputs=explain_inputs, pool=pool,
                            constrain=constrain, on_topic=on_topic)
    finally:
        store.close()
    if not quiet:
        console.print(f"{result.stopped}; models: {', '.join(map(str, result.models)) or '(none)'}")
