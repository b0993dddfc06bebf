"""Fault injection on inputs and processes (issue 12, cases 4-6): huge lines, impossible timestamps, closed pipes,
mistyped paths, models from elsewhere, damaged files, kills. Each test names the case it covers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import FIXTURES, ROOT, child_env, compressed_users
from typer.testing import CliRunner

from recgpt_cli.cli import app

pytestmark = pytest.mark.fault
runner = CliRunner()


def test_case4_a_json_line_over_16mb_imports(tmp_path: Path) -> None:
    """Case 4: a valid 40 MB line imports with the rest (was: the whole import aborted, no line number, an
    internal temp path in the message, even with --skip-bad)."""
    items = tmp_path / "items.jsonl"
    big = {"item_id": "big", "title": "t" * (40 * 1024 * 1024), "category": ["Home"]}
    items.write_bytes((FIXTURES / "items.jsonl").read_bytes() + orjson.dumps(big) + b"\n")
    db = tmp_path / "shop.duckdb"
    res = runner.invoke(app, ["import", "jsonl", "--db", str(db), "--items", str(items), "--quiet"])
    assert res.exit_code == 0, res.output
    con = duckdb.connect(str(db), read_only=True)
    n, longest = con.execute("SELECT count(*), max(length(title)) FROM items").fetchone()  # type: ignore[misc]
    con.close()
    assert n == 5 and longest == 40 * 1024 * 1024


@pytest.mark.parametrize("variant", ["movielens", "recbole"])
def test_case5_out_of_range_timestamps_are_bad_lines(variant: str, tmp_path: Path) -> None:
    """Case 5: out-of-range timestamps are `file:line` bad input (exit 2), or rejects under --skip-bad
    (was: `internal error` OutOfRange/Conversion, exit 1, with or without --skip-bad)."""
    src = FIXTURES.parent / ("ml-100k" if variant == "movielens" else "recbole")
    data = tmp_path / src.name
    shutil.copytree(src, data)
    inter = data / ("u.data" if variant == "movielens" else "tiny.inter")
    lines = inter.read_text().splitlines()
    at = 2 if variant == "movielens" else 3  # file line of the bad row (recbole has a header)
    lines[at - 1] = "\t".join(lines[at - 1].split("\t")[:3] + ["99999999999999"])
    inter.write_text("\n".join(lines) + "\n")
    db = tmp_path / "x.duckdb"
    res = runner.invoke(app, ["import", variant, str(data), "--db", str(db), "--quiet"])
    assert res.exit_code == 2, res.output
    assert f"{inter}:{at}: missing timestamp (or one outside years 1..9999" in res.output
    assert "internal error" not in res.output
    res = runner.invoke(app, ["import", variant, str(data), "--db", str(db), "--skip-bad", "--quiet"])
    assert res.exit_code == 0, res.output
    rejects = [json.loads(x) for x in db.with_name(db.name + ".rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [at]


def test_case5_out_of_range_epoch_in_jsonl(tmp_path: Path) -> None:
    """Case 5 (JSONL form): an epoch beyond year 9999 is a field error with its line."""
    beh = tmp_path / "b.jsonl"
    beh.write_text('{"user_id": "u1", "item_id": "i1", "type": "purchase", "timestamp": 1e15}\n')
    res = runner.invoke(app, ["import", "jsonl", "--db", str(tmp_path / "x.duckdb"), "--items",
                              str(FIXTURES / "items.jsonl"), "--behaviors", str(beh), "--quiet"])
    assert res.exit_code == 2 and f"{beh}:1: timestamp" in res.output and "outside years 1..9999" in res.output


def test_case5_the_calendars_last_day_compresses(tmp_path: Path) -> None:
    """Case 5: a behaviour on 9999-12-31 imports, and compress, whose default date is then the newest day, reads
    it (was: `internal error: OverflowError`, for every user and so for `recgpt run`)."""
    beh = tmp_path / "b.jsonl"
    beh.write_text('{"user_id": "u1", "item_id": "i1", "type": "purchase", "timestamp": "9999-12-31T23:59:59"}\n')
    db = tmp_path / "x.duckdb"
    res = runner.invoke(app, ["import", "jsonl", "--db", str(db), "--items", str(FIXTURES / "items.jsonl"),
                              "--behaviors", str(beh), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compress", "--db", str(db), "--out", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert rec["date"] == "9999-12-31" and "9999-12-31(purchase)" in rec["compressed"]


def test_case6_broken_pipe_is_quiet(trained: tuple[Path, Path]) -> None:
    """Case 6: a stage piped into `head -1` stops quietly, exit 0 (was: `internal error: BrokenPipeError`)."""
    db, model = trained
    cmd = f"{sys.executable} -m recgpt_cli retrieve --db {db} --model {model} --k 40 --exact --quiet | head -1"
    res = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, env=child_env(),
                         timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.count(b"\n") == 1 and b"error" not in res.stderr, res.stderr.decode()


@pytest.mark.parametrize("command", ["train-towers", "evaluate"])
def test_case6_mistyped_db_is_reported_and_not_created(command: str, tmp_path: Path) -> None:
    """Case 6: a mistyped --db says so and creates nothing (was: an empty database file and the wrong problem)."""
    db = tmp_path / "tpyo.duckdb"
    args = [command, "--db", str(db)] + (["--out-dir", str(tmp_path / "m")] if command == "train-towers"
                                          else ["--baseline", "pop"])
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "no such database" in res.output and not db.exists()


def test_case6_compress_empty_users_is_bad_input(shop_db: Path) -> None:
    """Case 6: `compress --users ''` is bad input (was: silently compressed everyone)."""
    res = runner.invoke(app, ["compress", "--db", str(shop_db), "--users", "", "--quiet"])
    assert res.exit_code == 2 and "--users '': no user ids" in res.output


@pytest.mark.parametrize("command", [["compress", "--in", "-"], ["mine-interests"]])
def test_case6_stdin_from_a_terminal_is_bad_input_not_a_hang(command: list[str], shop_db: Path) -> None:
    """Case 6: a stage told to read stdin with nothing piped in (a terminal) stops at once with exit 2, instead of
    waiting behind its progress bar for a user who does not know it is reading."""
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        args = [*command, "--db", str(shop_db)] if command[0] == "compress" else command
        proc = subprocess.run([sys.executable, "-m", "recgpt_cli", *args], stdin=secondary, capture_output=True,
                              env=child_env(), timeout=120)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 2, proc.stderr
    assert b"no input: stdin is a terminal" in proc.stderr and b"Traceback" not in proc.stderr


def test_case6_mine_interests_refuses_predict_tags_output(tmp_path: Path) -> None:
    """Case 6: each reader validates the stage it expects and names the one it got (was: mine-interests
    accepted predict-tags output)."""
    tags = tmp_path / "tags.jsonl"
    tags.write_bytes(orjson.dumps({"kind": "tags", "user_id": "u1", "compressed": "x", "interests": [],
                                   "tags": []}) + b"\n")
    res = runner.invoke(app, ["mine-interests", str(tags), "--backend", "openai", "--base-url",
                              "http://127.0.0.1:9/v1", "--no-cache"])
    assert res.exit_code == 2, res.output
    assert f"{tags}:1: expected recgpt compress output (kind 'compressed'), got recgpt predict-tags output" \
        in res.output
    res = runner.invoke(app, ["predict-tags", str(compressed_users(tmp_path / "c.jsonl", n=1)), "--backend",
                              "openai", "--base-url", "http://127.0.0.1:9/v1", "--no-cache"])
    assert res.exit_code == 2 and "got recgpt compress output (kind 'compressed')" in res.output
    res = runner.invoke(app, ["judge", "--task", "tags", str(tmp_path / "c.jsonl"), "--backend", "openai",
                              "--base-url", "http://127.0.0.1:9/v1", "--no-cache"])
    assert res.exit_code == 2 and "expected recgpt predict-tags output (kind 'tags'), got recgpt compress" in res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from towers_fixtures import make_shop_db

    d = tmp_path_factory.mktemp("towers")
    make_shop_db(d / "shop.duckdb").close()
    res = runner.invoke(app, ["train-towers", "--db", str(d / "shop.duckdb"), "--out-dir", str(d / "m"),
                              "--epochs", "1", "--dim", "8", "--batch-size", "32", "--negatives", "8", "--device",
                              "cpu", "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    return d / "shop.duckdb", d / "m"


def test_case6_retrieve_with_a_model_from_another_db(trained: tuple[Path, Path], shop_db: Path) -> None:
    """Case 6: a model trained on another database is bad input (was: exit 0 with users/items the DB lacks)."""
    _, model = trained
    res = runner.invoke(app, ["retrieve", "--db", str(shop_db), "--model", str(model), "--k", "3"])
    assert res.exit_code == 2, res.output
    assert "trained on another database" in res.output and "items are not in this --db" in res.output


def test_case9_retrieve_says_the_split_is_stale(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Case 9: after more behaviours are imported, retrieve's evaluation lists are refused like every other
    stage's (was: exit 0, and the lists refused one step later by evaluate); serving lists go through."""
    db, model = trained
    copy = tmp_path / "shop.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    user, item = con.execute("SELECT u.user_id, i.item_id FROM users u, items i WHERE NOT EXISTS (SELECT 1 FROM "
                             "behaviors b WHERE b.user_id = u.user_id AND b.item_id = i.item_id) LIMIT 1").fetchone()
    con.close()
    behaviour = tmp_path / "more.jsonl"
    behaviour.write_text(json.dumps({"user_id": user, "item_id": item, "type": "purchase",
                                     "timestamp": "2025-06-01T10:00:00Z"}) + "\n")
    assert runner.invoke(app, ["import", "jsonl", "--db", str(copy), "--behaviors", str(behaviour),
                               "--quiet"]).exit_code == 0
    res = runner.invoke(app, ["retrieve", "--db", str(copy), "--model", str(model), "--k", "3"])
    assert res.exit_code == 2 and "interactions but the DB now has" in res.output, res.output
    res = runner.invoke(app, ["retrieve", "--db", str(copy), "--model", str(model), "--k", "3", "--exclude", "all",
                              "--quiet"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("damaged", ["model.pt", "config.json"])
def test_case6_damaged_model_files(damaged: str, trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Case 6: a corrupt model.pt / config.json is bad input naming the folder (was: an internal error)."""
    db, model = trained
    copy = tmp_path / "m"
    shutil.copytree(model, copy)
    (copy / damaged).write_bytes(b"\x00garbage{")
    res = runner.invoke(app, ["retrieve", "--db", str(db), "--model", str(copy), "--k", "3"])
    assert res.exit_code == 2, res.output
    assert f"{copy}: damaged tower model" in res.output and "internal error" not in res.output


def test_case6_killed_import_leaves_no_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 6: staging folders of killed imports are removed by the next import (was: 90-230 MB left per kill)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f"recgpt-import-{dead.pid}-abc"
    left.mkdir()
    (left / "items.jsonl").write_text("{}\n")
    res = runner.invoke(app, ["import", "jsonl", "--db", str(tmp_path / "x.duckdb"), "--items",
                              str(FIXTURES / "items.jsonl"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert not left.exists() and list(tmp_path.glob("recgpt-import-*")) == []


@pytest.mark.parametrize("error", [RuntimeError("Query interrupted"),  # what DuckDB 2.0 raises on SIGINT
                                   duckdb.InterruptException("INTERRUPT Error: Query interrupted")])
def test_case6_ctrl_c_in_the_database_phase_is_an_interrupt(error: Exception, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """Case 6: DuckDB's interrupt during an import is Ctrl-C: exit 130 and the rollback message (was:
    `internal error: Query interrupted`)."""
    def interrupted(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("recgpt_cli.importers.import_jsonl", interrupted)
    db = tmp_path / "x.duckdb"
    res = runner.invoke(app, ["import", "jsonl", "--db", str(db), "--items", str(FIXTURES / "items.jsonl")])
    assert res.exit_code == 130 and "interrupted" in res.output and "internal error" not in res.output
    assert not db.exists()


def test_case6_stage_records_are_typed_and_ids_separate(tmp_path: Path) -> None:
    """Typed records: tags carry `interest_id` and the interest's text; every row has its kind and version."""
    from recgpt_cli.llm.base import FakeBackend
    from recgpt_cli.llm.structured import StructuredLLM
    from recgpt_cli.schema import InterestsRecord, TagsRecord, parse_stage_record, stage_row
    from recgpt_cli.tags import TagPredictor

    record = parse_stage_record({"kind": "interests", "user_id": "u1", "date": "2025-07-01",
                                 "compressed": "2025-05(purchase) | tennis racket",
                                 "interests": [{"id": "I1", "interest": "tennis", "stage": "long-term"}]},
                                InterestsRecord)
    assert record.interests[0].interest_id == "I1"  # type: ignore[attr-defined]
    reply = '{"tags": [{"item_tag": "tennis ball machine", "reason": "plays tennis", "serves_interest": "I1"}]}'
    row, _ = TagPredictor(StructuredLLM(FakeBackend(lambda m, s, p: reply)), None, n_tags=5)(
        record.model_dump(exclude_none=True))
    out = stage_row("tags", row)
    assert out["kind"] == "tags" and out["kind_version"] == 1
    assert out["tags"] == [{"tag": "tennis ball machine", "interest_id": "I1", "interest": "tennis",
                            "reason": "plays tennis"}]
    assert isinstance(parse_stage_record(orjson.loads(orjson.dumps(out)), TagsRecord), TagsRecord)
    with pytest.raises(ValueError, match="unknown field"):
        parse_stage_record({**out, "surprise": 1}, TagsRecord)


def test_case6_real_sigint_during_a_duckdb_query_exits_130(tmp_path: Path) -> None:
    """Case 6, for real: an interrupted DuckDB query inside a command (what Ctrl-C in an import's database phase
    raises: DuckDB turns the SIGINT into an interrupt of the running query) gives exit 130, not an internal error.
    The query is interrupted through DuckDB's own `interrupt()`, as its SIGINT handling does: a raw SIGINT is polled
    by DuckDB at moments that vary with load, which made this test time out on a busy machine."""
    script = tmp_path / "q.py"
    script.write_text(
        "import threading, time, duckdb, typer\n"
        "from recgpt_cli.commands.common import friendly_errors\n"
        "@friendly_errors\n"
        "def long_query() -> None:\n"
        "    con = duckdb.connect()\n"
        "    def ctrl_c() -> None:\n"
        "        while True:\n"
        "            time.sleep(0.3)\n"
        "            con.interrupt()\n"
        "    threading.Thread(target=ctrl_c, daemon=True).start()\n"
        "    con.execute('select count(*) from range(100000000000) t(x) where x % 7 = 3').fetchall()\n"
        "typer.run(long_query)\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, env=child_env(), timeout=60)
    assert res.returncode == 130, res.stderr.decode()
    assert b"interrupted" in res.stderr and b"internal error" not in res.stderr


def test_case7_a_model_is_scored_only_on_its_own_split(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Case 7: `evaluate --model` refuses another protocol, a --db without the model's split, and a split made
    with another seed (was: exit 0 with its train items scored as held-out hits, NDCG@10 0.46 vs 0.18)."""
    db, model = trained
    assert runner.invoke(app, ["evaluate", "--db", str(db), "--model", str(model), "--quiet"]).exit_code == 0
    res = runner.invoke(app, ["evaluate", "--db", str(db), "--model", str(model), "--protocol", "loo"])
    assert res.exit_code == 2 and "trained on the recbole split, asked to score on the loo split" in res.output
    sys.path.insert(0, str(ROOT / "tests"))
    from towers_fixtures import make_shop_db

    other = tmp_path / "same-data.duckdb"
    make_shop_db(other).close()  # the same users, items and behaviours, no split yet
    res = runner.invoke(app, ["evaluate", "--db", str(other), "--model", str(model)])
    assert res.exit_code == 2 and "has no recbole split" in res.output, res.output
    con = duckdb.connect(str(other), read_only=True)
    assert "splits" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}  # and it made none
    con.close()
    res = runner.invoke(app, ["train-towers", "--db", str(other), "--out-dir", str(tmp_path / "m7"), "--epochs", "1",
                              "--dim", "8", "--split-seed", "7", "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--db", str(other), "--model", str(model)])
    assert res.exit_code == 2 and "trained on another recbole split" in res.output, res.output
    # a stored split of another seed is not silently reused for an explicit --split-seed; --new-split rebuilds it
    res = runner.invoke(app, ["train-towers", "--db", str(other), "--out-dir", str(tmp_path / "m5"), "--epochs", "1",
                              "--dim", "8", "--split-seed", "5", "--threads", "1", "--quiet"])
    assert res.exit_code == 2 and "already holds a recbole split made with seed 7" in res.output
    res = runner.invoke(app, ["train-towers", "--db", str(other), "--out-dir", str(tmp_path / "m5"), "--epochs", "1",
                              "--dim", "8", "--split-seed", "5", "--new-split", "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "m5" / "config.json").read_text())["split_seed"] == 5
    res = runner.invoke(app, ["evaluate", "--db", str(other), "--model", str(tmp_path / "m7")])
    assert res.exit_code == 2 and "trained on another recbole split" in res.output  # m7's split is gone
    # retrieve's evaluation lists are refused there too (was: exit 0, refused one step later by evaluate)
    res = runner.invoke(app, ["retrieve", "--db", str(other), "--model", str(tmp_path / "m7"), "--k", "3"])
    assert res.exit_code == 2 and "trained on another recbole split" in res.output
    assert "--exclude all" in res.output
    res = runner.invoke(app, ["retrieve", "--db", str(other), "--model", str(tmp_path / "m7"), "--k", "3",
                              "--exclude", "all", "--quiet"])
    assert res.exit_code == 0 and res.stdout.count("\n") > 0, res.output
    # evaluate's --split-seed means what train-towers' does (was: --seed, silently the stored split of seed 5)
    res = runner.invoke(app, ["evaluate", "--db", str(other), "--baseline", "pop", "--split-seed", "7"])
    assert res.exit_code == 2 and "already holds a recbole split made with seed 5" in res.output, res.output
    res = runner.invoke(app, ["evaluate", "--db", str(other), "--baseline", "pop", "--split-seed", "5", "--json",
                              "--quiet"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_users"] > 0, res.output
    res = runner.invoke(app, ["evaluate", "--db", str(other), "--model", str(tmp_path / "m5"), "--split-seed", "5"])
    assert res.exit_code == 2 and "scored on the split it was trained on" in res.output


def test_case7_retrieve_pipes_into_evaluate(trained: tuple[Path, Path]) -> None:
    """Case 7: the README's pipe works: evaluate opens the --db read-only, as retrieve does (was: a lock
    conflict, then `<stdin>: file is empty`)."""
    db, model = trained
    cmd = (f"{sys.executable} -m recgpt_cli retrieve --db {db} --model {model} --k 10 --exact --quiet | "
           f"{sys.executable} -m recgpt_cli evaluate --db {db} --recs - --json --quiet")
    res = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, env=child_env(),
                         timeout=180)
    assert res.returncode == 0, res.stderr.decode()
    assert json.loads(res.stdout)["system"].startswith("recs:") and json.loads(res.stdout)["n_users"] > 0


@pytest.mark.parametrize("content", [b"\x00" * 5000, b'{"user_id": "u1"}\n', b"SQLite format 3\x00" + b"\x00" * 100])
def test_case7_a_file_that_is_not_duckdb_is_bad_input(content: bytes, tmp_path: Path) -> None:
    """Case 7: random bytes, a JSONL file or a SQLite file as --db / --buffer is exit 2 and stays untouched (was:
    exit 1, an extension download attempt for SQLite, and for JSONL labels `stored` in an in-memory database)."""
    f = tmp_path / "x.data"
    f.write_bytes(content)
    for args in (["train-towers", "--db", str(f), "--out-dir", str(tmp_path / "m")],
                 ["evaluate", "--db", str(f), "--baseline", "pop"],
                 ["judge", "annotate", "--task", "tags", "--buffer", str(f), "--export", "-"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and f"{f}: not a DuckDB database" in res.output, (args, res.output)
    assert f.read_bytes() == content


def test_case7_a_truncated_duckdb_file_is_bad_input(shop_db: Path, tmp_path: Path) -> None:
    """Case 7: a DuckDB file cut short (a copy that stopped half way) is exit 2 and named damaged (was: exit 1,
    as if another process held it)."""
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes(shop_db.read_bytes()[:100_000])
    res = runner.invoke(app, ["compress", "--db", str(cut), "--out", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 2 and f"{cut}: cannot open database, the file is damaged" in res.output, res.output


def test_case7_tower_settings_from_a_preset_are_checked_like_options(tmp_path: Path) -> None:
    """Case 7: a preset cannot pass what the options refuse; impossible devices are bad input (was: internal
    errors from deep inside torch)."""
    for line, expect in (('epochs = "ten"', "--epochs 'ten': expected int"), ("dim = 1", "--dim 1: must be >= 2"),
                         ("lr = -1.0", "--lr -1.0: must be >= 0.0")):
        preset = tmp_path / "p.toml"
        preset.write_text(line + "\n")
        res = runner.invoke(app, ["train-towers", "--preset", str(preset), "--print-config"])
        assert res.exit_code == 2 and expect in res.output, res.output
    res = runner.invoke(app, ["train-towers", "--device", "tpu", "--print-config"])
    assert res.exit_code == 2 and "expected auto, cpu or cuda" in res.output


def test_case8_align_options_fail_before_the_work(shop_db: Path, tmp_path: Path) -> None:
    """Case 8: a bad --device or --gguf-type is refused before any model loads (was: an internal error after a
    round of generation, or exit 1 after every training step); a .jsonl sample store, a samples file with a
    non-string message, an --out that is a file, a fake .gguf or a broken model dir as --from are exit 2."""
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task": "tag_prediction", "messages": [{"role": "user", "content": "hi"}],
                                   "target": "{}"}) + "\n")
    (tmp_path / "a_file").write_text("x")
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    cases = [
        (["--device", "gpu"], "--device 'gpu': expected auto, cpu or cuda"),
        (["--gguf-type", "q4_0"], "--gguf-type 'q4_0': expected one of q8_0, f16, f32"),
        (["--out", str(tmp_path / "a_file")], "is a file, expected an output folder"),
        (["--from", str(fake)], f"{fake}: not a GGUF file"),
        (["--from", str(broken)], f"{broken / 'config.json'}: not a valid transformers config"),
        (["--task", "magic"], f"{samples}: no samples of --task magic (it holds: tag_prediction)"),
        (["--lr", "nan"], "--lr nan: expected a positive number"),  # was: internal error from the optimiser
        (["--lr", "-1"], "--lr -1.0: expected a positive number"),
        (["--stages", "foo;bar"], "--stages/--curriculum: no samples of any task it names (bar, foo); the samples "
                                  "hold: tag_prediction"),
    ]
    for extra, expect in cases:
        args = ["align", "sft", "--samples", str(samples), "--out", str(tmp_path / "m"), "--max-steps", "1", *extra]
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and expect in res.output and "internal error" not in res.output, (extra, res.output)
    samples.write_text(json.dumps({"task": "tag_prediction", "messages": [{"role": "user", "content": 5}],
                                   "target": "{}"}) + "\n")
    res = runner.invoke(app, ["align", "sft", "--samples", str(samples), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and f"{samples}:1: not an alignment sample" in res.output
    res = runner.invoke(app, ["align", "data", "--db", str(shop_db), "--samples", str(tmp_path / "new.jsonl")])
    assert res.exit_code == 2 and "the sample store is a DuckDB file" in res.output
    assert not (tmp_path / "new.jsonl").exists()
    for kind in ("recbole", "movielens"):  # a file given where a dataset folder is expected is named as such
        res = runner.invoke(app, ["import", kind, str(tmp_path / "a_file"), "--db", str(tmp_path / "d.duckdb")])
        assert res.exit_code == 2 and f"{tmp_path / 'a_file'}: is a file, not a folder" in res.output, res.output
    res = runner.invoke(app, ["align", "data", "--db", str(shop_db), "--samples", str(tmp_path / "n.duckdb"),
                              "--exclude-users", str(tmp_path)])
    assert res.exit_code == 2 and f"{tmp_path}: is a directory, expected a file" in res.output, res.output
    ml = ROOT / "tests" / "fixtures" / "import" / "ml-100k"
    for value in ("nan", "inf"):  # was: internal error, the number pasted into the SQL as a column name
        res = runner.invoke(app, ["import", "movielens", str(ml), "--db", str(tmp_path / "d.duckdb"),
                                  "--rating-threshold", value])
        assert res.exit_code == 2 and f"--rating-threshold {value}: expected a finite number" in res.output, res.output


def test_case8_compress_run_and_annotate_inputs(shop_db: Path, tmp_path: Path) -> None:
    """Case 8: compress --in names the file and line of an unknown or non-string user id (was: `--users:
    unknown user id(s)`); NaN ratings, an empty DuckDB file, `run --out FILE`, `run --protocol bogus`, a label
    buffer under a file, a mistyped --buffer on export and a tags file labelled as interests are exit 2."""
    src = tmp_path / "in.jsonl"
    for line, expect in (('{"user_id": "zzz"}', f"{src}:2: unknown user_id 'zzz'"),
                         ('{"user_id": 5}', f"{src}:2: user_id must be a non-empty string")):
        src.write_text('{"user_id": "u1"}\n' + line + "\n")
        res = runner.invoke(app, ["compress", "--db", str(shop_db), "--in", str(src), "--quiet"])
        assert res.exit_code == 2 and expect in res.output, res.output
    res = runner.invoke(app, ["compress", "--db", str(shop_db), "--min-rating", "nan", "--quiet"])
    assert res.exit_code == 2 and "--min-rating nan" in res.output
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    res = runner.invoke(app, ["compress", "--db", str(empty), "--quiet"])
    assert res.exit_code == 2 and "an empty DuckDB file, not a recgpt database" in res.output
    res = runner.invoke(app, ["run", "--data", str(FIXTURES), "--db", str(tmp_path / "r.duckdb"), "--out",
                              str(src)])
    assert res.exit_code == 2 and "is a file, expected a folder" in res.output
    res = runner.invoke(app, ["run", "--data", str(FIXTURES), "--db", str(tmp_path / "r.duckdb"), "--out",
                              str(tmp_path / "o"), "--protocol", "bogus"])
    assert res.exit_code == 2 and "--protocol 'bogus'" in res.output and not (tmp_path / "r.duckdb").exists()
    gold = ROOT / "sample_data" / "gold" / "tags.jsonl"
    res = runner.invoke(app, ["judge", "annotate", "--task", "tags", "--import", str(gold), "--buffer",
                              str(src / "b.duckdb")])
    assert res.exit_code == 2 and f"{src} is a file, not a folder" in res.output
    keep = tmp_path / "prev.jsonl"
    keep.write_text("keep\n")
    res = runner.invoke(app, ["judge", "annotate", "--task", "tags", "--export", str(keep), "--buffer",
                              str(tmp_path / "typo.duckdb")])
    assert res.exit_code == 2 and "no such label buffer" in res.output and keep.read_text() == "keep\n"
    assert not (tmp_path / "typo.duckdb").exists()
    res = runner.invoke(app, ["judge", "annotate", "--task", "interests", str(gold), "--buffer",
                              str(tmp_path / "b.duckdb")])
    assert res.exit_code == 2 and "a sample for --task tags (it has 'tag'), not for --task interests" in res.output
