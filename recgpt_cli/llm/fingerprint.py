"""Model fingerprints: the sha256 of the weights, part of every cache key, computed once per file version.

Hashing a GGUF or safetensors file takes a while (~0.3 s per 100 MB), so digests are remembered in
`$XDG_CACHE_HOME/recgpt/model-hashes.json` keyed by path + mtime + size; a changed file is rehashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import orjson


def _store() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recgpt" / "model-hashes.json"


def file_sha256(path: Path) -> str:
    """sha256 hex digest of `path`, memoised on disk by (path, mtime, size)."""
    path = Path(path).resolve()
    st = path.stat()
    memo_key = f"{path}|{st.st_mtime_ns}|{st.st_size}"
    store = _store()
    memo: dict[str, str] = {}
    try:
        memo = orjson.loads(store.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        pass
    if memo_key in memo:
        return memo[memo_key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}
    memo[memo_key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(memo))
        tmp.replace(store)  # atomic: concurrent pipe stages never see a half-written file
    except OSError:
        pass  # a read-only home only costs a rehash next time
    return digest


def files_sha256(paths: Iterable[Path]) -> str:
    """One digest over several files (a transformers directory: config + tokenizer + weights)."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()
