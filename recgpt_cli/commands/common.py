"""Options shared by every stage (so scripts compose) and the error wrapper that keeps tracebacks away."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from recgpt_cli.errors import RecgptError

# Logs and progress go to stderr; stdout is for data.
console = Console(stderr=True)

_state = {"debug": os.environ.get("RECGPT_DEBUG", "") not in ("", "0")}


def set_debug(value: bool) -> None:
    _state["debug"] = value or _state["debug"]


DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB file holding users, items, behaviours and stage outputs.")]
InOpt = Annotated[str, typer.Option("--in", help="Input JSONL file, or - for stdin.")]
OutOpt = Annotated[str, typer.Option("--out", help="Output JSONL file, or - for stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; runs with the same seed give the same output.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries on stderr.")]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad",
                 help="Skip bad input lines (counted, written to <out>.rejects.jsonl) instead of stopping."),
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
            console.print("[yellow]interrupted[/]: finished work is saved; rerun the same command to resume")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence for users
            if _state["debug"]:
                raise
            console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n  rerun with --debug for a traceback",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]

