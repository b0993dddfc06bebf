"""`recgpt run`: the whole RecGPT workflow (paper Figure 2) as the sequence of shell invocations a user would type.

Each stage runs as its own `python -m recgpt_cli <stage>` process reading and writing files under `--out`, so the
pipeline is exactly the documented CLI (no private shortcuts) and a killed run resumes: the LLM stages answer
finished calls from their cache, train-towers continues from its last checkpoint, imports add nothing twice.

LLM stages (mine-interests, predict-tags, explain, judge) run on the first `llm_users` users of the compressed
output: on a CPU every call costs seconds, and the towers still train and retrieve for every user.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from recgpt_cli.errors import EXIT_PARTIAL, BadInput, RecgptError
from recgpt_cli.io import check_parents
from recgpt_cli.splits import PROTOCOLS
from recgpt_cli.tags import DEFAULT_BETA, EXPLORE

JUDGE_TASKS = {"interests": "interests.jsonl", "tags": "tags.jsonl", "explanations": "explanations.jsonl"}


@dataclass
class PipelineConfig:
    """Options of `recgpt run`; every value is passed on to the stage that owns it."""

    data: Path
    db: Path
    out: Path
    llm_users: int = 8
    explain_per_user: int = 5
    max_interests: int = 4
    n_tags: int = 12
    explore: int = EXPLORE
    k: int = 50
    beta: float = DEFAULT_BETA
    epochs: int | None = None  # None = the train-towers preset's
    protocol: str = "recbole"
    date: str | None = None
    seed: int = 0
    llm_args: list[str] = field(default_factory=list)  # --backend/--model/--base-url/--no-cache ... for LLM stages
    quiet: bool = False


@dataclass
class StageResult:
    name: str
    seconds: float
    rows: int
    note: str = ""


@dataclass
class PipelineReport:
    stages: list[StageResult] = field(default_factory=list)
    judge: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> {n, errors, pass_rates}
    metrics: dict[str, Any] = field(default_factory=dict)  # evaluate --json of the retrieved lists
    llm_tokens: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # task -> (calls, prompt, completion)
    interests_kept: int = 0  # what mine-interests' rules let through: 0 is the raw model's usual result (--model base)
    partial: list[str] = field(default_factory=list)  # stages that exited 3: some records failed (not cached)


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                yield orjson.loads(raw)


def count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for raw in fh if raw.strip())


def import_args(data: Path) -> list[str]:
    """`import jsonl` for our JSONL layout (users/items/behaviors.jsonl), `import recbole` for atomic files."""
    if not data.is_dir():
        raise BadInput(f"--data {data}: not a folder", "give a folder with users/items/behaviors.jsonl or X.inter")
    if (data / "behaviors.jsonl").exists():
        args = ["jsonl", "--behaviors", str(data / "behaviors.jsonl")]
        for name in ("users", "items"):
            if (data / f"{name}.jsonl").exists():
                args += [f"--{name}", str(data / f"{name}.jsonl")]
        return args
    if list(data.glob("*.inter")):
        return ["recbole", str(data)]
    raise BadInput(f"--data {data}: found neither behaviors.jsonl nor a RecBole .inter file")


def tower_options(protocol: str, beta: float) -> tuple[list[str], str]:
    """Extra `train-towers` options for a run fusing tags at `beta`, and a note: the protocol's default preset when
    it trains a tag tower; otherwise (default-loo trains none, and retrieve refuses to fuse tags with an untrained
    one) the default preset's tag weight."""
    from recgpt_cli.towers.config import default_preset, load_preset

    if beta >= 1 or load_preset(default_preset(protocol)).tag_weight:
        return [], ""
    weight = str(load_preset("default").tag_weight)
    return ["--tag-weight", weight], f"tag tower trained at --tag-weight {weight} for --beta {beta}"


def head_users(src: Path, dst: Path, n: int) -> int:
    """The first `n` records of `src` (one per user) with a history into `dst`; returns how many. A user whose
    compressed history is empty would cost an LLM call on nothing and get no recommendation to explain."""
    kept = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        for raw in fin:
            if not raw.strip() or orjson.loads(raw).get("compressed") == "":
                continue
            if kept >= n:
                break
            fout.write(raw if raw.endswith(b"\n") else raw + b"\n")
            kept += 1
    return kept


def top_recs_for(recs: Path, users: set[str], per_user: int, dst: Path) -> int:
    """Each listed user's `per_user` best retrieved items (retrieve writes a user's rows best first)."""
    seen: Counter[str] = Counter()
    with dst.open("wb") as fout:
        for rec in read_rows(recs):
            uid = str(rec["user_id"])
            if uid in users and seen[uid] < per_user:
                seen[uid] += 1
                fout.write(orjson.dumps(rec) + b"\n")
    return sum(seen.values())


def judge_summary(path: Path) -> dict[str, Any]:
    """Pass rate per criterion and overall from `recgpt judge` rows (errors count as judged-failed, shown apart)."""
    n = errors = passed = 0
    crit: Counter[str] = Counter()
    crit_n: Counter[str] = Counter()
    from recgpt_cli.judge import get_task

    for row in read_rows(path):
        n += 1
        if row.get("error"):
            errors += 1
            continue
        spec = get_task(row["task"])
        passed += int(bool(row["pass"]))
        for c, label in row["verdicts"].items():
            crit_n[c] += 1
            crit[c] += int(spec.passes(c, label))
    judged = n - errors
    rates = {c: crit[c] / crit_n[c] for c in crit_n}
    rates["pass"] = passed / judged if judged else 0.0
    return {"n": n, "errors": errors, "pass_rates": rates}


def llm_usage(cache_dir: Path, since: float) -> dict[str, tuple[int, int, int]]:
    """(calls, prompt tokens, completion tokens) per task from the cache's call log, for this run only."""
    import duckdb

    out: dict[str, tuple[int, int, int]] = {}
    for f in sorted(cache_dir.glob("*.duckdb")):
        try:
            con = duckdb.connect(str(f), read_only=True)
        except duckdb.Error:
            continue
        try:
            row = con.execute(
                "select count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) "
                "from llm_calls where not cached and epoch(ts) >= ?", [since]).fetchone()
        except duckdb.Error:
            row = None
        finally:
            con.close()
        if row and row[0]:
            out[f.stem] = (int(row[0]), int(row[1]), int(row[2]))
    return out


def _die_with_parent() -> None:
    """In the stage's process (Linux): SIGTERM when `recgpt run` dies, kill -9 included, so no orphaned stage
    keeps calling the LLM while the rerun starts the same stage beside it."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Runner:
    """Runs one stage as `python -m recgpt_cli ...`; stderr passes through (progress), stdout is captured."""

    def __init__(self, cfg: PipelineConfig, env: dict[str, str]) -> None:
        self.cfg = cfg
        self.env = env
        self.report = PipelineReport()

    def __call__(self, name: str, args: list[str], *, rows_in: Path | None = None, note: str = "") -> str:
        if not self.cfg.quiet:
            from recgpt_cli.commands.common import console

            console.rule(f"[bold]{name}[/]", style="cyan")
            console.print("$ recgpt " + " ".join(args), highlight=False, soft_wrap=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "recgpt_cli", *args], env=self.env, stdout=subprocess.PIPE,
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        seconds = time.perf_counter() - started
        if proc.returncode == EXIT_PARTIAL:  # records that failed are written with `error`; the run goes on
            note = f"{note}; some records failed" if note else "some records failed"
            self.report.partial.append(name)
        elif proc.returncode != 0:
            err = RecgptError(f"stage {name} failed (exit {proc.returncode}); its error is printed above",
                              "fix it and rerun `recgpt run`: finished work is kept and reused")
            err.exit_code = proc.returncode if proc.returncode in (2, 130) else 1
            raise err
        rows = count_rows(rows_in) if rows_in is not None and rows_in.exists() else 0
        self.report.stages.append(StageResult(name, seconds, rows, note))
        return proc.stdout.decode()


def run_pipeline(cfg: PipelineConfig) -> PipelineReport:
    """Import -> compress -> mine-interests -> predict-tags -> train-towers -> retrieve -> evaluate -> explain
    (table + lookup) -> judge x3, on `cfg.data`; every file lands in `cfg.out`. Returns the summary."""
    if cfg.llm_users < 1:
        raise BadInput(f"--llm-users {cfg.llm_users}: must be at least 1")
    if cfg.protocol not in PROTOCOLS:  # before the import, not when compress meets it minutes later
        raise BadInput(f"--protocol {cfg.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file, expected a folder")
    check_parents(out)
    check_parents(cfg.db)
    out.mkdir(parents=True, exist_ok=True)
    cfg.db.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("RECGPT_CACHE_DIR", str(out / "llm-cache"))
    cache_dir = Path(env["RECGPT_CACHE_DIR"])
    t0 = time.time()
    run = Runner(cfg, env)
    db = ["--db", str(cfg.db)]
    q = ["--quiet"] if cfg.quiet else []
    day = ["--date", cfg.date] if cfg.date else []
    llm = [*cfg.llm_args, "--seed", str(cfg.seed), *q]
    f = {name: out / f"{name}.jsonl" for name in (
        "compressed", "compressed.llm", "interests", "tags", "recs", "recs.llm", "explanations",
        "explanation_table")}

    run("import", ["import", *import_args(cfg.data), *db, *q])
    # LLM inputs are split-aware (issue 8): each user's history holds only train + valid interactions, cut at the
    # newest of them, so the test items scored below never reach a prompt. --date instead serves everything up to
    # that day (for production runs); then nothing LLM-made can be scored, and evaluate gets no tags.
    view = [] if cfg.date else ["--split", cfg.protocol, "--phase", "test"]
    run("compress", ["compress", *db, "--out", str(f["compressed"]), *day, *view, "--stats", *q],
        rows_in=f["compressed"], note="up to --date" if cfg.date else f"{cfg.protocol} split, test phase")
    n = head_users(f["compressed"], f["compressed.llm"], cfg.llm_users)
    run("mine-interests", ["mine-interests", str(f["compressed.llm"]), "--out", str(f["interests"]), *day,
                            "--max-interests", str(cfg.max_interests), *llm],
        rows_in=f["interests"], note=f"first {n} users")
    run.report.interests_kept = sum(len(r.get("interests") or []) for r in read_rows(f["interests"]))
    run.report.stages[-1].note += f", {run.report.interests_kept} interests kept"
    run("predict-tags", ["predict-tags", str(f["interests"]), "--out", str(f["tags"]), *day, *db,
                          "--n-tags", str(cfg.n_tags), "--explore", str(cfg.explore), *llm],
        rows_in=f["tags"])
    model_dir = out / "models" / "tar"
    tower_opts, tower_note = tower_options(cfg.protocol, cfg.beta)
    run("train-towers", ["train-towers", *db, "--out-dir", str(model_dir), "--protocol", cfg.protocol, *tower_opts,
                         *(["--epochs", str(cfg.epochs)] if cfg.epochs else []), "--seed", str(cfg.seed), *q],
        note=tower_note)
    run("retrieve", ["retrieve", *db, "--model", str(model_dir), "--tags", str(f["tags"]), "--beta", str(cfg.beta),
                     "--k", str(cfg.k), "--out", str(f["recs"]), *q], rows_in=f["recs"], note=f"beta {cfg.beta}")
    scored_tags = [] if cfg.date else ["--tags", str(f["tags"])]
    truth = cfg.data / "truth_interests.jsonl"  # sample_data's ground truth: interest P/R/F1 in the summary
    if scored_tags and truth.exists():
        scored_tags += ["--truth", str(truth)]
    # with --date the recs' tag rows saw the held-out items: score the user-only lists (beta = 1) instead
    recs_scored = f["recs"] if not cfg.date else out / "recs.user-only.jsonl"
    if cfg.date:
        run("retrieve (beta 1)", ["retrieve", *db, "--model", str(model_dir), "--beta", "1", "--k", str(cfg.k),
                                  "--out", str(recs_scored), *q], rows_in=recs_scored)
    metrics = run("evaluate", ["evaluate", *db, "--recs", str(recs_scored), "--protocol", cfg.protocol,
                               "--k", "10,20", *scored_tags, "--plot", str(out / "plots"),
                               "--json", "--seed", str(cfg.seed), *q])
    run.report.metrics = orjson.loads(metrics) if metrics.strip() else {}
    (out / "evaluate.json").write_text(metrics)
    users = {str(r["user_id"]) for r in read_rows(f["compressed.llm"])}
    n_recs = top_recs_for(f["recs"], users, cfg.explain_per_user, f["recs.llm"])
    run("explain --build-table", ["explain", "--build-table", *db, "--interests", str(f["tags"]),
                                  "--table-out", str(f["explanation_table"]), *day, *llm],
        rows_in=f["explanation_table"])
    judged_tasks = dict(JUDGE_TASKS)
    if n_recs:
        run("explain", ["explain", str(f["recs.llm"]), *db, "--interests", str(f["tags"]), "--out",
                        str(f["explanations"]), *day, *q], rows_in=f["explanations"],
            note=f"top {cfg.explain_per_user} per user, table lookup")
    else:  # said in the stage table, not a crash on an empty file
        run.report.stages.append(StageResult("explain", 0.0, 0, f"skipped: the first {n} users have no recommendation"))
        del judged_tasks["explanations"]
    for task, name in judged_tasks.items():
        judged = out / f"judge_{task}.jsonl"
        run(f"judge {task}", ["judge", "--task", task, str(out / name), "--out", str(judged), *llm],
            rows_in=judged)
        run.report.judge[task] = judge_summary(judged)
    run.report.llm_tokens = llm_usage(cache_dir, t0)
    return run.report


def summary_tables(report: PipelineReport) -> list[Any]:
    """rich tables: per-stage time and rows, LLM tokens, judge pass rates per criterion, retrieval metrics."""
    from rich.table import Table

    stages = Table(title="recgpt run: stages")
    for col in ("stage", "seconds", "rows out", "note"):
        stages.add_column(col, justify="left" if col in ("stage", "note") else "right")
    for s in report.stages:
        stages.add_row(s.name, f"{s.seconds:.1f}", f"{s.rows:,}" if s.rows else "", s.note)
    stages.add_row("total", f"{sum(s.seconds for s in report.stages):.1f}", "", "")
    tables: list[Any] = [stages]
    if report.llm_tokens:
        tok = Table(title="LLM calls this run (cache misses)")
        for col in ("task", "calls", "prompt tokens", "completion tokens"):
            tok.add_column(col, justify="left" if col == "task" else "right")
        for task, (calls, p, c) in report.llm_tokens.items():
            tok.add_row(task, f"{calls:,}", f"{p:,}", f"{c:,}")
        tables.append(tok)
    judge = Table(title="LLM judge pass rates (§3)")
    for col in ("task", "samples", "errors", "criterion", "pass rate"):
        judge.add_column(col, justify="left" if col in ("task", "criterion") else "right")
    for task, js in report.judge.items():
        for i, (c, rate) in enumerate(js["pass_rates"].items()):
            judge.add_row(task if i == 0 else "", str(js["n"]) if i == 0 else "",
                          str(js["errors"]) if i == 0 else "", c, f"{rate:.0%}")
        judge.add_section()
    tables.append(judge)
    if report.metrics:
        met = Table(title=f"retrieval, {report.metrics.get('protocol')} split, {report.metrics.get('phase')}")
        met.add_column("metric")
        met.add_column("value", justify="right")
        for key in ("recall@10", "ndcg@10", "hit@10", "itemcoverage@10", "giniindex@10", "averagepopularity@10",
                    "exploration@10", "hr_tagcategory@30", "tag_kept_share", "tag_valid_share", "tag_bad_reason_share",
                    "interest_reason_grounded", "tag_reason_grounded", "interest_f1"):
            if isinstance(report.metrics.get(key), (int, float)):  # JSON null: undefined (e.g. no tag kept)
                met.add_row(key, f"{report.metrics[key]:.4f}")
        tables.append(met)
    return tables
