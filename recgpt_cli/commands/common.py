"""Options shared by every stage (so scripts compose) and the error wrapper that keeps tracebacks away."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from recgpt_cli.errors import BadInput, RecgptError

# Logs and progress go to stderr; stdout is for data.
console = Console(stderr=True)

_state = {"debug": os.environ.get("RECGPT_DEBUG", "") not in ("", "0")}


def set_debug(value: bool) -> None:
    _state["debug"] = value or _state["debug"]


DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB file holding users, items, behaviours and stage outputs.")]
BufferOpt = Annotated[Path, typer.Option("--buffer", help="Judge label buffer: a DuckDB file (created if missing) "
                                         "holding judge samples, labels and milestone checks.")]
InOpt = Annotated[str, typer.Option("--in", help="Input JSONL file, or - for stdin.")]
OutOpt = Annotated[str, typer.Option("--out", help="Output JSONL file, or - for stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0,
                                      help="Random seed; runs with the same seed give the same output.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries on stderr.")]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad",
                 help="Skip bad input lines (counted, written to <out>.rejects.jsonl; with --out -, beside the "
                 "input, or to ./stdin.rejects.jsonl) instead of stopping."),
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn RecgptError into `error: message` + exit code; Ctrl-C into exit 130. Tracebacks only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RecgptError as exc:
            if _state["debug"]:
                raise
            console.print(f"[bold red]error:[/] {exc.message}", highlight=False, markup=True, soft_wrap=True)
            if exc.hint:
                console.print(f"  hint: {exc.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _interrupted()
        except BrokenPipeError:
            # The reader went away (`| head -1`): what it wanted was written; stop quietly.
            _silence_stdout()
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence for users
            if _is_duckdb_interrupt(exc):  # Ctrl-C inside a DuckDB query; its transaction rolled back
                _interrupted()
            if _state["debug"]:
                raise
            console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n  rerun with --debug for a traceback",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]



def _interrupted() -> NoReturn:
    console.print("[yellow]interrupted[/]: finished work is saved; rerun the same command to resume")
    if any(t.name.startswith("recgpt-llm-") and t.is_alive() for t in threading.enumerate()):
        # LLM calls still hang in worker threads: leave now. Finished calls are committed to the cache, and
        # tearing the interpreter down around a thread inside DuckDB or a socket could abort instead of exit 130.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)
    raise typer.Exit(130) from None


def _is_duckdb_interrupt(exc: Exception) -> bool:
    """DuckDB turns a Ctrl-C during a query into RuntimeError("Query interrupted") (InterruptException in some
    versions) instead of KeyboardInterrupt."""
    return type(exc).__name__ == "InterruptException" or (
        type(exc) is RuntimeError and str(exc).startswith("Query interrupted"))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def user_list(path: Path | None, con: Any = None) -> list[str]:
    """User ids from a file, one a line (`--exclude-users`: the users an evaluation scores); [] without a file.
    A list that excludes nobody by mistake would let scored users into training, so JSON lines, blanks inside an
    id, an empty file and (with `con`, the --db) ids the store does not know are bad input."""
    if path is None:
        return []
    if not path.is_file():
        raise BadInput(f"{path}: {'is a directory, expected a file' if path.is_dir() else 'no such file'}",
                       "one user id a line")
    ids: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        uid = line.strip()
        if not uid:
            continue
        if uid[0] in "{[\"" or any(c.isspace() for c in uid):
            raise BadInput.at(str(path), n, f"expected one bare user id a line, got {uid[:60]!r}")
        ids.append(uid)
    if not ids:
        raise BadInput(f"{path}: file is empty, expected one user id a line")
    if con is not None:
        from recgpt_cli.store import known_user_ids

        known = known_user_ids(con)
        unknown = [u for u in ids if u not in known]
        if unknown:
            raise BadInput(f"{path}: {len(unknown)} user id(s) not in the --db: {', '.join(unknown[:3])}"
                           f"{', …' if len(unknown) > 3 else ''}", "is it the list for this dataset?")
    return ids
