"""Tower presets: files that load, round-trip, name every field, and drive `train-towers` with overrides."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recgpt_cli.cli import app
from recgpt_cli.errors import BadInput
from recgpt_cli.towers.config import TowerConfig, default_preset, load_preset, preset_names, preset_text, presets_dir

RUN_ONLY = {"device", "threads", "resume"}


def test_every_preset_loads_round_trips_and_names_every_field(tmp_path: Path):
    assert {"paper", "default", "default-loo"} <= set(preset_names())
    for name in preset_names():
        cfg = load_preset(name)
        text = (presets_dir() / f"{name}.toml").read_text()
        keys = {line.split(" = ")[0] for line in text.splitlines() if " = " in line and not line.startswith("#")}
        assert keys == {f.name for f in fields(TowerConfig)} - RUN_ONLY, name  # nothing hidden
        path = tmp_path / f"{name}.toml"
        path.write_text(preset_text(cfg, "copy"))
        assert load_preset(path) == cfg


def test_paper_preset_is_the_dataclass_default_and_the_defaults_differ():
    assert load_preset("paper") == TowerConfig()
    default = load_preset("default")
    assert default.ensemble == 1 and default.n_negatives == "all"  # a single model, full softmax
    loo = load_preset("default-loo")
    assert loo.protocol == "loo" and loo.user_tower == "sequential" and loo.batching == "next-item"
    assert default_preset(None) == "default" and default_preset("loo") == "default-loo"
    vae = load_preset("variational")
    assert vae.user_tower == "variational" and vae.item_bias and not vae.normalize and vae.ensemble == 1


def test_bad_presets_are_errors(tmp_path: Path):
    with pytest.raises(BadInput, match="no such preset"):
        load_preset("fastest")
    bad = tmp_path / "bad.toml"
    bad.write_text('dim = 8\nhidden_size = 3\n')
    with pytest.raises(BadInput, match="unknown field.*hidden_size"):
        load_preset(bad)
    bad.write_text('n_negatives = "most"\n')
    with pytest.raises(BadInput, match="--negatives most"):
        load_preset(bad)
    bad.write_text('lr = 1\ndim = 8\n')
    assert load_preset(bad) == replace(TowerConfig(), lr=1.0, dim=8) and isinstance(load_preset(bad).lr, float)


def test_cli_resolves_preset_then_options():
    runner = CliRunner()
    res = runner.invoke(app, ["train-towers", "--print-config"])
    assert res.exit_code == 0, res.output
    assert res.stdout == preset_text(load_preset("default"), "resolved from preset default")
    res = runner.invoke(app, ["train-towers", "--print-config", "--preset", "paper", "--negatives", "all",
                              "--dim", "32", "--no-in-batch"])
    assert res.exit_code == 0, res.output
    assert 'n_negatives = "all"' in res.stdout and "dim = 32" in res.stdout and "in_batch = false" in res.stdout
    assert "batching = \"pairs\"" in res.stdout
    res = runner.invoke(app, ["train-towers", "--print-config", "--protocol", "loo"])
    assert 'user_tower = "sequential"' in res.stdout
    res = runner.invoke(app, ["train-towers", "--print-config", "--negatives", "lots"])
    assert res.exit_code == 2 and "--negatives lots" in res.output
