"""JSONL in and out, where `-` means stdin/stdout. Bottom layer: imports nothing from recgpt_cli but errors."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from recgpt_cli.errors import BadInput

STDIO = "-"
T = TypeVar("T")


def source_name(path: str | Path) -> str:
    """Name used in error messages: `<stdin>` for `-`, else the path as given."""
    return "<stdin>" if str(path) == STDIO else str(path)


@dataclass
class Rejects:
    """Bad lines kept aside under --skip-bad: counted, reported, and written beside the output."""

    source: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: int, error: str, raw: str) -> None:
        self.rows.append({"source": self.source, "line": line, "error": error, "raw": raw})

    def __len__(self) -> int:
        return len(self.rows)

    def write(self, path: Path) -> None:
        with path.open("ab") as fh:
            for row in self.rows:
                fh.write(orjson.dumps(row) + b"\n")


def rejects_path_for(out: str | Path | None, fallback: str | Path) -> Path:
    """`<out>.rejects.jsonl` beside the output, or beside the input when writing to stdout/DB."""
    base = Path(str(out)) if out not in (None, STDIO) else Path(str(fallback) if str(fallback) != STDIO else "stdin")
    return base.with_name(base.name + ".rejects.jsonl")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams (test runners, daemons)
        return False


def _open_binary(path: str | Path) -> IO[bytes]:
    if str(path) == STDIO:
        if _is_terminal(sys.stdin):  # nothing piped in: a stage would sit waiting behind its progress bar
            raise BadInput("no input: stdin is a terminal", "give a file, or pipe the previous stage's output in")
        return sys.stdin.buffer
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file", "check the path")
    if p.is_dir():
        raise BadInput(f"{p}: is a directory, expected a JSONL file")
    return p.open("rb")


def checked_first(records: Callable[[], Iterator[T]], src: str | Path, *, skip_bad: bool) -> Iterator[T]:
    """`records()`, but from a file every line is checked before the first record is yielded: a bad line 500
    stops a slow (LLM) stage before its first call rather than after 499 of them. A pipe is checked as it
    streams (it can be read once; a rerun answers the finished calls from the cache); with --skip-bad bad
    lines are set aside as they come, so nothing needs checking ahead."""
    if not skip_bad and str(src) != STDIO:
        for _ in records():
            pass
    yield from records()


def iter_jsonl(
    path: str | Path, *, skip_bad: bool = False, rejects: Rejects | None = None, allow_empty: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, object) for each non-blank line. Raise BadInput `file:line: ...` on the
    first bad line unless skip_bad, in which case the line goes to `rejects`. An empty input is BadInput unless
    `allow_empty` (the line-by-line stages pass it for stdin: an empty partition of a distributed job, or an
    empty shard, pipes nothing in and gets nothing out)."""
    name = source_name(path)
    fh = _open_binary(path)
    n_seen = 0
    try:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            n_seen += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                err = f"not valid UTF-8 (byte {exc.start})"
                if skip_bad and rejects is not None:
                    rejects.add(lineno, err, raw.decode("utf-8", "replace").rstrip("\n"))
                    continue
                raise BadInput.at(name, lineno, err, "re-encode the file as UTF-8") from None
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                err = f"malformed JSON ({exc.msg})"
                if skip_bad and rejects is not None:
                    rejects.add(lineno, err, text.rstrip("\n"))
                    continue
                raise BadInput.at(name, lineno, err) from None
            if not isinstance(obj, dict):
                err = f"expected a JSON object, got {type(obj).__name__}"
                if skip_bad and rejects is not None:
                    rejects.add(lineno, err, text.rstrip("\n"))
                    continue
                raise BadInput.at(name, lineno, err)
            yield lineno, obj
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()
    if n_seen == 0 and not allow_empty:
        raise BadInput(f"{name}: file is empty, expected JSON lines")


@contextlib.contextmanager
def jsonl_writer(path: str | Path | None) -> Iterator[JsonlWriter]:
    """Write JSON lines to a file or stdout (`-` or None). Flushes per line so pipes stream.

    A file is written beside itself (`.NAME.PID.part`) and renamed over NAME only when the block ends without an
    error: a bad input line, a crash or Ctrl-C leaves the previous output whole (the LLM cache keeps the finished
    work), and the output may be the input file (the input is read before the rename). Devices and pipes
    (/dev/null, a FIFO) are written directly."""
    if path is None or str(path) == STDIO:
        yield JsonlWriter(sys.stdout.buffer, close=False)
        return
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{p}: is a directory, expected an output file path")
    if p.is_symlink():
        p = p.resolve()  # replace what the link points at, not the link
    if p.exists() and not p.is_file():
        with _open_out(p, p) as fh:
            writer = JsonlWriter(fh, close=True)
            yield writer
        return
    tmp = p.with_name(f".{p.name}.{os.getpid()}.part")
    with _open_out(p, tmp) as fh:
        for old in p.parent.glob(f".{glob.escape(p.name)}.*.part"):  # left by a kill -9
            pid = old.name[len(p.name) + 2:-len(".part")]
            if old != tmp and pid.isdigit() and not pid_alive(int(pid)):
                old.unlink(missing_ok=True)
        writer = JsonlWriter(fh, close=True)
        try:
            yield writer
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        writer.close()
        os.replace(tmp, p)


@contextlib.contextmanager
def _open_out(p: Path, target: Path) -> Iterator[IO[bytes]]:
    """`target` opened for writing (its folder made), an OSError as `p: cannot write (...)`."""
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fh = target.open("wb")
    except OSError as exc:
        raise BadInput(f"{p}: cannot write ({exc.strerror or exc})", "check the --out path") from None
    try:
        yield fh
    finally:
        fh.close()


class JsonlWriter:
    def __init__(self, fh: IO[bytes], close: bool) -> None:
        self._fh = fh
        self._close = close
        self.count = 0

    def write(self, obj: Any) -> None:
        self._fh.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._close:
            self._fh.close()
        else:
            self._fh.flush()


def check_parents(p: Path) -> None:
    """A path whose folder part names an existing file (`x.jsonl/out.duckdb`) is bad input, said before mkdir."""
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise BadInput(f"{p}: {parent} is a file, not a folder")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (ours always does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder `<tmp>/<prefix><pid>-…`, removed on exit. Folders left by killed processes (kill -9
    skips every cleanup) are removed first, so they never pile up."""
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{prefix}*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-") as tmp:
        yield Path(tmp)
