"""`recgpt import jsonl|recbole|movielens`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Load users, items and behaviours into the DuckDB store.", no_args_is_help=True)
