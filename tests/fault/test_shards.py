"""Scale-out (README, "Scale out"): N workers, each `compress --shard K/N | mine-interests - | predict-tags -`,
run at once as separate processes on one --db and one cache folder, give together exactly the records one
process gives; an empty shard pipes nothing through and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from conftest import ROOT, FakeServer, child_env

from recgpt_cli.compress import in_shard, parse_shard
from recgpt_cli.importers import import_jsonl
from recgpt_cli.store import open_db

# tennis players among them: the fake server answers a tennis interest, which their histories support
USERS = "u001,u002,u003,u017,u019,u024,u034,u081,u083"


def _pipeline(db: Path, server: FakeServer, cache: Path, *compress_args: str, users: str = USERS) -> str:
    py = f"{sys.executable} -m recgpt_cli"
    llm = f"--backend openai --base-url {server.url} --model fake --cache-dir {cache} --quiet"
    return (f"set -o pipefail; {py} compress --db {db} --users {users} --max-tokens 256 --quiet "
            f"{' '.join(compress_args)} | {py} mine-interests - {llm} | {py} predict-tags - --db {db} --n-tags 3 "
            f"--constrain none {llm}")


def _rows(data: bytes) -> list[dict]:
    return sorted((orjson.loads(x) for x in data.splitlines() if x.strip()), key=lambda r: r["user_id"])


def test_shards_partition_the_users_and_recombine(fake_server: FakeServer, tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    con = open_db(db)
    sd = ROOT / "sample_data"
    import_jsonl(con, users=sd / "users.jsonl", items=sd / "items.jsonl", behaviors=sd / "behaviors.jsonl")
    con.close()
    fake_server.delay_s = 0.05  # the three workers' calls overlap
    one = subprocess.run(["bash", "-c", _pipeline(db, fake_server, tmp_path / "cache-one")], capture_output=True,
                         env=child_env(), timeout=300)
    assert one.returncode == 0, one.stderr.decode()
    whole = _rows(one.stdout)
    assert [r["user_id"] for r in whole] == sorted(USERS.split(",")) and all(r["kind"] == "tags" for r in whole)
    assert sum(len(r["interests"]) for r in whole) > 0  # the fake server's tennis interest survives the rules
    assert sum(r["tag_rules_removed"]["invalid"] for r in whole) > 0  # its tags were checked against the --db
    workers = [subprocess.Popen(["bash", "-c", _pipeline(db, fake_server, tmp_path / "cache", "--shard", f"{k}/3")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()) for k in range(3)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], [e.decode() for _, e in outs]
    parts = [_rows(o) for o, _ in outs]
    assert [{r["user_id"] for r in p} for p in parts] == [
        {u for u in USERS.split(",") if in_shard(u, k, 3)} for k in range(3)]
    assert sorted((r for p in parts for r in p), key=lambda r: r["user_id"]) == whole
    # a shard with none of the users: empty stdin flows through every stage, exit 0, nothing written
    k_empty = next(k for k in range(50) if not in_shard("u001", k, 50))
    empty = subprocess.run(["bash", "-c", _pipeline(db, fake_server, tmp_path / "cache", "--shard", f"{k_empty}/50",
                                                    users="u001")],
                           capture_output=True, env=child_env(), timeout=300)
    assert empty.returncode == 0 and empty.stdout == b"", empty.stderr.decode()


def test_shard_option_is_checked() -> None:
    assert parse_shard("0/1") == (0, 1) and parse_shard("7/8") == (7, 8)
    for bad in ("8/8", "-1/4", "1", "a/b", "1/0"):
        try:
            parse_shard(bad)
        except Exception as exc:  # noqa: BLE001 - the CLI turns it into exit 2
            assert f"--shard {bad!r}" in str(exc)
        else:
            raise AssertionError(bad)
    assert sum(in_shard(f"u{i}", k, 4) for i in range(200) for k in range(4)) == 200  # each user in one shard


def test_a_busy_db_is_waited_for_then_reported(tmp_path: Path) -> None:
    """The stages of one pipe start at once: `compress --split` writing a new split while `predict-tags --db`
    reads the catalogue made one of them fail with DuckDB's lock error (found by bench/bench_shards.py). Opening
    a --db now waits for another process's lock (up to $RECGPT_DB_WAIT s), then says so, exit 1."""
    db = tmp_path / "shop.duckdb"
    con = open_db(db)
    sd = ROOT / "sample_data"
    import_jsonl(con, users=sd / "users.jsonl", items=sd / "items.jsonl", behaviors=sd / "behaviors.jsonl")
    con.close()
    hold = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "time.sleep(float(sys.argv[2])); con.close()")
    args = ["compress", "--db", str(db), "--users", "u001", "--quiet"]
    holder = subprocess.Popen([sys.executable, "-c", hold, str(db), "2"], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    res = subprocess.run([sys.executable, "-m", "recgpt_cli", *args], capture_output=True, timeout=60,
                         env=child_env({"RECGPT_DB_WAIT": "0"}))
    assert res.returncode == 1 and b"cannot open database" in res.stderr, res.stderr.decode()
    res = subprocess.run([sys.executable, "-m", "recgpt_cli", *args], capture_output=True, timeout=60,
                         env=child_env())  # the default wait outlasts the 2 s hold
    holder.wait(timeout=30)
    assert res.returncode == 0 and orjson.loads(res.stdout)["user_id"] == "u001", res.stderr.decode()
    res = subprocess.run([sys.executable, "-m", "recgpt_cli", *args], capture_output=True, timeout=60,
                         env=child_env({"RECGPT_DB_WAIT": "soon"}))
    assert res.returncode == 2 and b"RECGPT_DB_WAIT='soon'" in res.stderr
