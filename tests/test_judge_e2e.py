"""The README's judge commands end to end on sample_data with the real embedded model: import gold labels,
derive labels, build judge samples, train the judge (2 LoRA steps), check it against fresh labels (exit codes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recgpt_cli.align.samples import load_samples
from recgpt_cli.cli import app
from recgpt_cli.judge.buffer import label_counts, open_buffer
from recgpt_cli.judge.check import check_history

pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_readme_judge_commands_end_to_end(embedded_hf: Path, tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[1] / "sample_data"
    db, buf, samples, model = (tmp_path / "s.duckdb", tmp_path / "labels.duckdb", tmp_path / "judge" / "s.duckdb",
                               tmp_path / "judge-model")
    run = CliRunner().invoke
    r = run(app, ["import", "jsonl", "--db", str(db), "--users", str(sample / "users.jsonl"), "--items",
                  str(sample / "items.jsonl"), "--behaviors", str(sample / "behaviors.jsonl")])
    assert r.exit_code == 0, r.output
    r = run(app, ["judge", "annotate", "--task", "tags", "--import", str(sample / "gold" / "tags.jsonl"), "--buffer",
                  str(buf)])
    assert r.exit_code == 0, r.output
    r = run(app, ["judge", "derive", "--db", str(db), "--buffer", str(buf), "--truth",
                  str(sample / "truth_interests.jsonl"), "--max-users", "6"])
    assert r.exit_code == 0, r.output
    con = open_buffer(buf)
    counts = label_counts(con, "tags")
    con.close()
    assert set(counts["by_source"]) == {"human", "derived:truth"}
    r = run(app, ["align", "data", "--source", "labels", "--task", "judge", "--buffer", str(buf), "--samples",
                  str(samples), "--max-per-class", "8"])
    assert r.exit_code == 0, r.output
    assert {s.task for s in load_samples(samples, tasks=["judge"])} == {"judge_interests", "judge_tags",
                                                                         "judge_explanations"}
    r = run(app, ["align", "sft", "--task", "judge", "--samples", str(samples), "--out", str(model), "--from",
                  str(embedded_hf), "--max-steps", "2", "--batch-size", "1", "--threads", "2"])
    assert r.exit_code == 0, r.output
    assert (model / "model.gguf").exists()
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text("".join((sample / "gold" / "tags.jsonl").read_text().splitlines(keepends=True)[:4]))
    check = ["judge", "check", "--task", "tags", "--against", str(fresh), "--model", str(model), "--buffer", str(buf),
             "--no-cache", "-q"]
    r = run(app, [*check, "--min-f1", "0"])
    assert r.exit_code == 0, r.output
    r = run(app, [*check, "--min-f1", "1.0"])  # nothing short of perfect agreement passes: the check must fire
    con = open_buffer(buf)
    hist = check_history(con, "tags")
    con.close()
    if hist[0]["f1"] < 1.0:
        assert r.exit_code == 1 and "below --min-f1 1.00" in r.output
    assert len(hist) == 2 and hist[1]["passed"]
