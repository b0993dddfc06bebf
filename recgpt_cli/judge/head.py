"""A trained judge that reads the model's hidden state instead of its written answer (§3.2, judge training).

The embedded 135M model writes "Yes"/"spontaneity" for every sample even after SFT on the label buffer, yet its
hidden state at the judge prompt already separates what people pass from what they fail (bench/README.md, judge
section: 8-fold user-grouped CV on the hand labels, ACC 0.91 / 0.95 / 0.91 on interests / tags / explanations).
So the trained judge here is a set of linear heads over that state, fitted on the buffer's labels:

- features: the judge prompt (the same prompt file and chat template the LLM judge is served with) through the
  frozen model; at one layer, the last token's state next to the mean over all tokens;
- a sample head (fail / pass) decides the §4.3 verdict — on the hand labels it agreed with people more often than
  ANDing per-criterion heads (CV mean 0.92 vs 0.88);
- one head per criterion (softmax over the labels seen) says which criterion fails and with which label, so a row
  has the same shape as the LLM judge's and `pass == spec.sample_passes(verdicts)` always holds.

Heads are softmax regressions on standardised features with an L2 penalty, fitted by L-BFGS (deterministic).
A head dir holds `manifest.json` (the feature model, its fingerprint, the layer, per-task counts and held-out
agreement) and one `<task>.pt` per task; it serves only with the model it was fitted on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from recgpt_cli.errors import BadInput, RecgptError
from recgpt_cli.judge.criteria import JudgeTask, get_task
from recgpt_cli.judge.rules import apply_rules
from recgpt_cli.judge.samples import compact_input, prompt_variables
from recgpt_cli.llm.prompts import load_prompt

# Chosen by 8-fold user-grouped CV on sample_data/judge_train (the gold set never): layer 18 of SmolLM2-135M's 30,
# last token + mean, weight decay 0.01 — the best mean over the three tasks (bench/README.md, judge section).
DEFAULT_LAYER = 18
DEFAULT_WEIGHT_DECAY = 0.01
PASS, FAIL = "pass", "fail"
MANIFEST = "manifest.json"
# Heads that ship with the package: fitted by `make heads` on sample_data/judge_train over the embedded model, for
# the tasks where they beat the LLM judge + rules on the gold labels (tags: ACC 0.875 vs 0.667, bench/README.md).
BUILTIN_HEADS = Path(__file__).resolve().parent / "heads"


@dataclass
class Linear:
    """Softmax regression over standardised features: P(label | x) for `labels`."""

    labels: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # [labels, features]
    bias: np.ndarray  # [labels]

    def proba(self, x: np.ndarray) -> np.ndarray:
        """[n, labels] probabilities (a one-label head is certain)."""
        z = ((x - self.mean) / self.scale) @ self.weight.T + self.bias
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def state(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "mean": self.mean, "scale": self.scale, "weight": self.weight,
                "bias": self.bias}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Linear:
        return cls(list(s["labels"]), *(np.asarray(s[k], dtype=np.float32) for k in ("mean", "scale", "weight",
                                                                                      "bias")))


def fit_linear(x: np.ndarray, y: Sequence[str], weight_decay: float = DEFAULT_WEIGHT_DECAY) -> Linear:
    """Fit a softmax regression of labels `y` on rows of `x` (L2 `weight_decay` on the weights, L-BFGS)."""
    import torch

    if len(x) != len(y) or not len(y):
        raise ValueError(f"need one label per feature row, got {len(x)} rows and {len(y)} labels")
    labels = sorted(set(y))
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-4  # a constant feature must not divide by zero
    d = x.shape[1]
    if len(labels) == 1:
        return Linear(labels, mean, scale, np.zeros((1, d), np.float32), np.zeros(1, np.float32))
    xs = torch.tensor((x - mean) / scale, dtype=torch.float32)
    target = torch.tensor([labels.index(v) for v in y])
    w = torch.zeros(len(labels), d, requires_grad=True)
    b = torch.zeros(len(labels), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w.T + b, target) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Linear(labels, mean.astype(np.float32), scale.astype(np.float32), w.detach().numpy().astype(np.float32),
                  b.detach().numpy().astype(np.float32))


def _best(head: Linear, p: np.ndarray, allowed: Sequence[str]) -> str | None:
    """The most probable of head's labels that is in `allowed`, or None when the head never saw one."""
    cands = [(p[i], label) for i, label in enumerate(head.labels) if label in allowed]
    return max(cands)[1] if cands else None


@dataclass
class TaskHead:
    """The heads of one judge task."""

    task: str
    sample: Linear  # labels ⊆ {fail, pass}
    criteria: dict[str, Linear]

    def pass_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.sample.proba(x)
        return p[:, self.sample.labels.index(PASS)] if PASS in self.sample.labels else np.zeros(len(x))

    def verdicts(self, x: np.ndarray) -> list[dict[str, str]]:
        """Per-criterion verdicts whose §4.3 pass equals the sample head's decision (see module doc)."""
        spec = get_task(self.task)
        p_pass = self.pass_proba(x)
        probs = {c: h.proba(x) for c, h in self.criteria.items()}
        out = []
        for i in range(len(x)):
            v: dict[str, str] = {}
            crit_pass: dict[str, float] = {}
            for c in spec.criteria:
                head, p = self.criteria[c], probs[c][i]
                ok = spec.criteria[c][1]
                crit_pass[c] = float(sum(p[j] for j, label in enumerate(head.labels) if label in ok))
                if p_pass[i] >= 0.5:
                    v[c] = _best(head, p, ok) or ok[0]
                else:
                    v[c] = head.labels[int(np.argmax(p))]
            if p_pass[i] < 0.5 and spec.sample_passes(v):
                # The sample head says fail while every criterion head says pass: the least sure criterion fails,
                # with its likeliest failing label (or the first failing label when its head never saw one).
                c = min(crit_pass, key=lambda k: (crit_pass[k], list(spec.criteria).index(k)))
                bad = [label for label in spec.allowed(c) if label not in spec.criteria[c][1]]
                v[c] = _best(self.criteria[c], probs[c][i], bad) or bad[0]
            out.append(v)
        return out

    def state(self) -> dict[str, Any]:
        return {"task": self.task, "sample": self.sample.state(),
                "criteria": {c: h.state() for c, h in self.criteria.items()}}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> TaskHead:
        return cls(str(s["task"]), Linear.from_state(s["sample"]),
                   {c: Linear.from_state(h) for c, h in s["criteria"].items()})


def fit_task_head(task: str, x: np.ndarray, labels: Sequence[dict[str, str]],
                  weight_decay: float = DEFAULT_WEIGHT_DECAY) -> TaskHead:
    """Fit the sample head and one head per criterion on feature rows `x` and their buffer labels."""
    spec = get_task(task)
    sample = fit_linear(x, [PASS if spec.sample_passes(lab) else FAIL for lab in labels], weight_decay)
    return TaskHead(task, sample, {c: fit_linear(x, [lab[c] for lab in labels], weight_decay) for c in spec.criteria})


def model_fingerprint(model_dir: Path) -> str:
    """The `hf` backend's model id: sha256 over the dir's weights, config and tokenizer (loads nothing)."""
    from recgpt_cli.llm.hf_backend import HFBackend

    return HFBackend(model_dir).model_id


def base_fingerprint(base: str | None, model_dir: Path) -> str:
    """Identity of the model the heads read: a GGUF's own sha256 when converted from one (the embedded model for
    None) — stable across transformers versions, whose converted dirs differ in metadata — else the dir's."""
    from recgpt_cli.llm.embedded import embedded_model_path
    from recgpt_cli.llm.fingerprint import file_sha256

    if base is None or base == "embedded" or str(base).endswith(".gguf"):
        return file_sha256(Path(base) if base not in (None, "embedded") else embedded_model_path())
    return model_fingerprint(model_dir)


class FeatureCache:
    """Feature vectors already computed, keyed by the exact prompt text, for one (model fingerprint, layer): a rerun
    after a crash or Ctrl-C, or a refit on more labels, reads them instead of running the model again. Each process
    appends to its own file (concurrent stages never interleave; a line torn by a kill is skipped on reading) and
    every file of the dir is read back. Only finished vectors are written, so a failure is never cached."""

    def __init__(self, cache_dir: Path | str, fingerprint: str, layer: int) -> None:
        self.dir = Path(cache_dir) / "judge-head-features" / f"{fingerprint[:16]}-L{layer}"
        self._vecs: dict[str, np.ndarray] | None = None
        self._file: Any = None

    @staticmethod
    def key(text: str) -> str:
        import hashlib

        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        if self._vecs is None:
            self._vecs = {}
            for f in sorted(self.dir.glob("*.jsonl")):
                for line in f.read_bytes().splitlines():
                    try:
                        rec = orjson.loads(line)
                        self._vecs[rec["k"]] = np.frombuffer(bytes.fromhex(rec["v"]), dtype=np.float32)
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # a torn last line
        return self._vecs.get(key)

    def put(self, key: str, vec: np.ndarray) -> None:
        import os
        import time

        if self._file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._file = (self.dir / f"{os.getpid()}-{time.time_ns()}.jsonl").open("ab")
        self._file.write(orjson.dumps({"k": key, "v": np.asarray(vec, np.float32).tobytes().hex()}) + b"\n")
        self._file.flush()
        if self._vecs is not None:
            self._vecs[key] = vec


class FeatureModel:
    """The frozen transformers model the heads read: judge prompt -> [last-token state, mean state] at `layer`."""

    def __init__(self, model_dir: Path | str, layer: int = DEFAULT_LAYER, cache: FeatureCache | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise BadInput(f"{self.model_dir}: not a transformers model directory (no config.json)")
        hf_logging.disable_progress_bar()
        self.tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=torch.float32).eval()
        n_layers = int(self.model.config.num_hidden_layers)
        if not 0 <= layer <= n_layers:
            raise BadInput(f"--layer {layer}: the model has layers 0..{n_layers}")
        self.layer = layer
        self.cache = cache
        self._prompts: dict[str, Any] = {}

    def text(self, sample: dict[str, Any], task: str) -> str:
        spec = get_task(task)
        if task not in self._prompts:
            self._prompts[task] = load_prompt(spec.prompt)
        msgs = self._prompts[task].render(prompt_variables(sample, task))
        if not self.tok.chat_template:  # a base model without one: the messages as plain text, as `hf` serves them
            return "\n\n".join(m["content"] for m in msgs)
        return str(self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))

    def features(self, samples: Iterable[dict[str, Any]], task: str) -> Iterator[np.ndarray]:
        """One feature vector per sample, in order (one forward pass each: no padding to disturb the mean)."""
        import torch

        with torch.inference_mode():
            for s in samples:
                text = self.text(s, task)
                key = FeatureCache.key(text)
                hit = self.cache.get(key) if self.cache is not None else None
                if hit is not None:
                    yield hit
                    continue
                ids = self.tok(text, return_tensors="pt").input_ids
                h = self.model(ids, output_hidden_states=True).hidden_states[self.layer][0]
                vec = torch.cat([h[-1], h.mean(dim=0)]).numpy().astype(np.float32)
                if self.cache is not None:
                    self.cache.put(key, vec)
                yield vec


def feature_matrix(fm: FeatureModel, samples: Sequence[dict[str, Any]], task: str,
                   progress: Any = None) -> np.ndarray:
    rows = []
    for f in fm.features(samples, task):
        rows.append(f)
        if progress is not None:
            progress()
    return np.stack(rows) if rows else np.zeros((0, 1), np.float32)


@dataclass
class HeadDir:
    """A loaded head dir: manifest + the heads of the tasks it was trained on."""

    path: Path
    manifest: dict[str, Any]

    def task_head(self, task: str) -> TaskHead:
        import torch

        get_task(task)
        f = self.path / f"{task}.pt"
        if task not in self.manifest.get("tasks", {}) or not f.exists():
            trained = ", ".join(sorted(self.manifest.get("tasks", {}))) or "none"
            raise BadInput(f"{self.path}: no judge head for --task {task} (trained: {trained})",
                           f"train one: recgpt judge train --task {task} --out {self.path}")
        return TaskHead.from_state(torch.load(f, weights_only=True))

    def refuse_training_samples(self, samples: Sequence[dict[str, Any]], task: str, what: str) -> None:
        """Scoring a head on labels it was fitted on would leak: refuse when any of `samples` is one of them."""
        from recgpt_cli.judge.buffer import refuse_trained_on

        info = self.manifest.get("tasks", {}).get(task, {})
        refuse_trained_on(samples, task, what, f"head {self.path}", sample_hashes=info.get("train_hashes", []),
                          input_hashes=info.get("train_inputs", []))

    def feature_model(self, cache_dir: Path | str = ".recgpt-cache") -> FeatureModel:
        """The model the heads were fitted on, checked by fingerprint before any verdict."""
        from recgpt_cli.align.sft import resolve_base

        base = self.manifest["base"]
        model_dir, _ = resolve_base(None if base == "embedded" else base, Path(cache_dir))
        if base_fingerprint(base, model_dir) != self.manifest["fingerprint"]:
            raise RecgptError(f"{self.path}: the heads were fitted on features of {base} "
                              f"(fingerprint {self.manifest['fingerprint'][:12]}), and {model_dir} is not that model",
                              "retrain the heads on this model: recgpt judge train")
        layer = int(self.manifest["layer"])
        return FeatureModel(model_dir, layer, FeatureCache(cache_dir, self.manifest["fingerprint"], layer))


def load_head_dir(path: Path | str) -> HeadDir:
    p = Path(path)
    try:
        manifest = orjson.loads((p / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BadInput(f"{p}: not a judge head dir (no readable {MANIFEST}: {exc})",
                       "make one with: recgpt judge train --out DIR") from None
    if not isinstance(manifest, dict) or not {"base", "fingerprint", "layer", "tasks"} <= set(manifest):
        raise BadInput(f"{p / MANIFEST}: not a judge head manifest (needs base, fingerprint, layer, tasks)")
    return HeadDir(p, manifest)


def builtin_head(task: str) -> Path | None:
    """The packaged head dir when it has a head for `task`, else None."""
    try:
        return BUILTIN_HEADS if task in load_head_dir(BUILTIN_HEADS).manifest["tasks"] else None
    except BadInput:
        return None


def save_task_head(path: Path, head: TaskHead, manifest: dict[str, Any], info: dict[str, Any]) -> None:
    """Write `<task>.pt` and add the task to `manifest.json` (both atomically; other tasks' heads stay)."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{head.task}.pt.tmp"
    torch.save(_tensors(head.state()), tmp)
    tmp.replace(path / f"{head.task}.pt")
    old: dict[str, Any] = {}
    if (path / MANIFEST).exists():
        old = load_head_dir(path).manifest
        if (old["fingerprint"], old["layer"]) != (manifest["fingerprint"], manifest["layer"]):
            old = {}  # heads of another model or layer cannot be served beside these: start the dir over
            for f in path.glob("*.pt"):
                if f.stem != head.task:
                    f.unlink()
    merged = {**manifest, "tasks": {**old.get("tasks", {}), head.task: info}}
    tmp_m = path / f".{MANIFEST}.tmp"
    tmp_m.write_bytes(orjson.dumps(merged, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    tmp_m.replace(path / MANIFEST)


def _tensors(state: Any) -> Any:
    import torch

    if isinstance(state, dict):
        return {k: _tensors(v) for k, v in state.items()}
    if isinstance(state, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(state))
    return state


def head_rows(samples: Sequence[dict[str, Any]], x: np.ndarray, head: TaskHead, *,
              use_rules: bool = True) -> list[dict[str, Any]]:
    """Judge rows in the LLM judge's shape ({task, sample_id, input, verdicts, pass[, rules]}) from the heads."""
    spec: JudgeTask = get_task(head.task)
    rows = []
    for sample, verdicts in zip(samples, head.verdicts(x) if len(samples) else [], strict=True):
        row: dict[str, Any] = {"task": head.task, "sample_id": sample["sample_id"],
                               "input": compact_input(sample, head.task)}
        fired = apply_rules(head.task, sample, verdicts) if use_rules else []
        row["verdicts"] = verdicts
        row["pass"] = spec.sample_passes(verdicts)
        if fired:
            row["rules"] = fired
        rows.append(row)
    return rows


def train_heads(
    buffer: Path | str,
    tasks: Sequence[str],
    out: Path | str,
    *,
    base: str | None = None,
    layer: int = DEFAULT_LAYER,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    sources: Sequence[str] | None = None,
    heldout_share: float = 0.2,
    max_per_class: int = 600,
    cache_dir: Path | str = ".recgpt-cache",
    progress: Any = None,
) -> dict[str, dict[str, Any]]:
    """Fit the heads of each task on the buffer's complete labels (held-out users kept out, the newest
    `max_per_class` per class kept) and score them on the held-out users. Returns per task the manifest entry
    ({counts, data_hash, heldout: {judge: Table 9 overall}} or {"up_to_date": True, ...}). A task whose labels
    and settings did not change since its head was written is not refitted (a rerun after a kill resumes)."""
    import hashlib

    from recgpt_cli.align.sft import resolve_base
    from recgpt_cli.judge.agreement import agreement
    from recgpt_cli.judge.buffer import judge_input_hash, labelled, open_buffer
    from recgpt_cli.judge.rules import rules_only
    from recgpt_cli.judge.training import downsample_recent, split_heldout

    out = Path(out)
    for t in tasks:
        get_task(t)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file, not a folder", "give a folder for the heads")
    if (out / "model.pt").exists():  # a tower model's folder: its config.json would sit beside the heads
        raise BadInput(f"--out {out}: holds a tower model", "give the heads a folder of their own")
    model_dir, _ = resolve_base(base, Path(cache_dir))
    # An absolute path, so the heads serve from any working directory.
    fingerprint = base_fingerprint(base, model_dir)
    manifest = {"base": str(Path(base).resolve()) if base else "embedded",
                "fingerprint": fingerprint, "layer": layer, "weight_decay": weight_decay}
    old = load_head_dir(out).manifest if (out / MANIFEST).exists() else {}
    con = open_buffer(buffer)
    try:
        rows = {t: labelled(con, t, sources=sources) for t in tasks}
    finally:
        con.close()
    fm: FeatureModel | None = None
    result: dict[str, dict[str, Any]] = {}
    for task in tasks:
        spec = get_task(task)
        train, held = split_heldout(rows[task], heldout_share, task)
        kept = downsample_recent(train, task, max_per_class)
        if not kept:
            raise BadInput(f"{buffer}: no completely labelled {task} samples of training users"
                           f"{f' from sources {list(sources)}' if sources else ''} ({len(rows[task])} labelled in all)",
                           f"label some: recgpt judge annotate --task {task} FILE, or --import labels.jsonl")
        h = hashlib.sha256(orjson.dumps([manifest, heldout_share, max_per_class, sorted(
            [r["sample_hash"], r["labels"]] for r in rows[task])]))
        data_hash = h.hexdigest()
        prev = old.get("tasks", {}).get(task, {})
        if prev.get("data_hash") == data_hash and (out / f"{task}.pt").exists():
            result[task] = {**prev, "up_to_date": True}
            continue
        fm = fm or FeatureModel(model_dir, layer, FeatureCache(cache_dir, fingerprint, layer))
        x = feature_matrix(fm, [r["sample"] for r in kept], task, progress)
        head = fit_task_head(task, x, [r["labels"] for r in kept], weight_decay)
        labels = [{"sample_id": r["sample"]["sample_id"], "labels": r["labels"]} for r in held]
        samples = [r["sample"] for r in held]
        heldout: dict[str, Any] = {}
        if held:
            xh = feature_matrix(fm, samples, task, progress)
            judged = {"always pass": [{"task": task, "sample_id": s["sample_id"], "verdicts": {
                          c: spec.criteria[c][1][0] for c in spec.criteria}} for s in samples],
                      "rules only": rules_only(task, samples),
                      "head": head_rows(samples, xh, head, use_rules=False),
                      "head + rules": head_rows(samples, xh, head)}
            heldout = {name: agreement(js, labels, task)["overall"] for name, js in judged.items()}
        n_pass = sum(spec.sample_passes(r["labels"]) for r in kept)
        info = {"data_hash": data_hash, "labelled": len(rows[task]), "train": len(kept), "train_pass": n_pass,
                "heldout": len(held), "agreement_heldout": heldout,
                # so scoring on them can be refused, under any user id
                "train_hashes": sorted(r["sample_hash"] for r in kept),
                "train_inputs": sorted({judge_input_hash(r["sample"], task) for r in kept})}
        save_task_head(out, head, manifest, info)
        result[task] = info
    return result


class HeadJudge:
    """A head dir ready to judge: the feature model loaded once, each task's heads on first use. Called as
    `judge(task, sample) -> passes` it is a rejection filter for self-training (align.self_train.JudgeFilter)."""

    def __init__(self, head_dir: HeadDir, cache_dir: Path | str = ".recgpt-cache") -> None:
        self.head_dir = head_dir
        self.cache_dir = cache_dir
        self._fm: FeatureModel | None = None
        self._heads: dict[str, TaskHead] = {}

    def _head(self, task: str) -> TaskHead:
        if task not in self._heads:
            self._heads[task] = self.head_dir.task_head(task)  # a missing task fails before the model loads
        return self._heads[task]

    def rows(self, samples: Iterable[dict[str, Any]], task: str, *, use_rules: bool = True,
             progress: Any = None) -> Iterator[dict[str, Any]]:
        """Judge rows, one sample at a time (so output streams)."""
        head = self._head(task)
        for sample in samples:
            if self._fm is None:  # loaded (and checked) at the first sample: judging nothing costs nothing
                self._fm = self.head_dir.feature_model(self.cache_dir)
            x = next(self._fm.features([sample], task))[None, :]
            yield head_rows([sample], x, head, use_rules=use_rules)[0]
            if progress is not None:
                progress()

    def __call__(self, task: str, sample: dict[str, Any]) -> bool:
        return bool(next(self.rows([{**sample, "sample_id": "candidate"}], task))["pass"])


def judge_with_head(samples: Iterable[dict[str, Any]], head_dir: HeadDir, task: str, *, use_rules: bool = True,
                    cache_dir: Path | str = ".recgpt-cache", progress: Any = None) -> Iterator[dict[str, Any]]:
    """Judge rows for `samples` from a trained head dir (see HeadJudge.rows)."""
    return HeadJudge(head_dir, cache_dir).rows(samples, task, use_rules=use_rules, progress=progress)


def is_head_dir(path: Path | str) -> bool:
    """Whether `path` is a head dir (`judge train --out`) rather than an aligned model dir."""
    p = Path(path) / MANIFEST
    try:
        m = orjson.loads(p.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(m, dict) and {"fingerprint", "layer", "tasks"} <= set(m)
