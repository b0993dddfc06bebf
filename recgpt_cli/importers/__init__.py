"""Importers: JSONL, RecBole atomic files and raw MovieLens into the DuckDB store (issue 2, `recgpt import`).

All three stage rows in bulk through DuckDB, then merge inside one transaction (see `staging`).
"""

from recgpt_cli.importers.jsonl import import_jsonl
from recgpt_cli.importers.movielens import import_movielens
from recgpt_cli.importers.recbole import import_recbole
from recgpt_cli.importers.staging import ImportReport, TableCounts

__all__ = ["ImportReport", "TableCounts", "import_jsonl", "import_movielens", "import_recbole"]
