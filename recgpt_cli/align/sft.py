"""Supervised fine-tuning of a stage model on alignment samples (RecGPT §2.1.2, §2.2.2, Appendix C): transformers +
peft, LoRA by default (full fine-tuning with `method="full"`), torch on CPU by default, CUDA when present.

    from recgpt_cli.align.sft import SFTConfig, train_sft
    result = train_sft(load_samples("samples.duckdb"), "models/aligned", SFTConfig(max_steps=50))

What it writes to `out`:
- `checkpoint/`: the trainable weights, optimiser, scheduler and step, replaced atomically every `save_every`
  steps and on Ctrl-C; a rerun of the same command (same data and settings) resumes from it, so a kill -9 loses
  at most `save_every` steps. Different data or settings in the same `out` are refused, never mixed.
- `adapter/` (LoRA), `hf/` (base + adapter merged: a transformers dir for `--backend hf`) and `model.gguf` (the
  default llama.cpp backend; `align.gguf_export`), `train_log.jsonl` (loss, tokens/s per step) and
  `manifest.json` (base, data hash, settings, steps, seconds, peak memory).

Loss is on the reply tokens only (the rendered prompt is context), the reply ends with the chat template's
end-of-turn token so the model learns to stop. Samples longer than `max_length` tokens are skipped and counted.
The forward pass runs under bf16 autocast where the device has native bf16 (`precision`, `autocast_dtype`); the
weights and the optimiser stay fp32.
Curriculum (Appendix C): `stages` trains the given task groups one after another, each for `epochs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from recgpt_cli.align.provenance import trained_users, write_trained_users
from recgpt_cli.align.samples import Sample
from recgpt_cli.devices import check_device, pick_device
from recgpt_cli.errors import BadInput, RecgptError

PRECISIONS = ("auto", "bf16", "fp32")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class SFTConfig:
    method: str = "lora"  # lora | full
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lr: float = 5e-4  # LoRA; full fine-tuning wants ~1e-5..5e-5
    weight_decay: float = 0.0
    epochs: int = 1
    max_steps: int | None = None  # stop early (quick runs); None: `epochs` over the data
    batch_size: int = 4
    max_length: int = 1024  # tokens, prompt + reply
    warmup_steps: int = 5
    seed: int = 0
    save_every: int = 20
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch CPU threads (None: torch's default)
    precision: str = "auto"  # auto (bf16 autocast where the device computes bf16 natively) | bf16 | fp32
    gradient_checkpointing: bool = False  # recompute activations in backward: ~2.3x less memory, ~1.5x the time
    gguf_type: str = "q8_0"  # f32 | f16 | q8_0
    stages: list[list[str]] = field(default_factory=list)  # curriculum: task groups in order; [] = all at once

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise BadInput(f"--method {self.method!r}: expected lora or full")
        if self.batch_size < 1 or self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise BadInput("--batch-size, --epochs and --max-steps must be at least 1")
        if self.precision not in PRECISIONS:
            raise BadInput(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        check_device(self.device)
        check_gguf_type(self.gguf_type)

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed (not where it runs or how often it saves)."""
        d = asdict(self)
        for k in ("save_every", "device", "threads", "gguf_type", "precision", "gradient_checkpointing"):
            d.pop(k)
        return d


@dataclass
class SFTResult:
    out: Path
    steps: int
    samples: int
    skipped_long: int
    first_loss: float
    last_loss: float
    train_s: float
    tokens_per_s: float
    peak_memory_mb: float
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)


def data_hash(samples: Sequence[Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(s.hash.encode())
    return h.hexdigest()


def check_gguf_type(name: str) -> None:
    """--gguf-type before training: the export comes last, after every step was paid for."""
    from recgpt_cli.align.gguf_export import OUT_TYPES

    if name not in OUT_TYPES:
        raise BadInput(f"--gguf-type {name!r}: expected one of {', '.join(OUT_TYPES)}")


def resolve_base(base: str | Path | None, cache_dir: Path) -> tuple[Path, Path | None]:
    """(transformers dir to train from, GGUF whose metadata the exported GGUF copies). `base` may be None (the
    embedded model), a .gguf file (converted once into `cache_dir`), a transformers dir, or an aligned model's
    output dir (incremental learning: its `hf/` and the GGUF template it was made with)."""
    from recgpt_cli.llm.convert import convert_gguf_to_hf
    from recgpt_cli.llm.embedded import check_gguf, embedded_model_path
    from recgpt_cli.llm.fingerprint import file_sha256

    if base is None or str(base).endswith(".gguf"):
        gguf = Path(base) if base is not None else embedded_model_path()
        check_gguf(gguf, "--from")
        hf = cache_dir / f"hf-{file_sha256(gguf)[:16]}"
        return convert_gguf_to_hf(hf, gguf), gguf
    p = Path(base)
    manifest = p / "manifest.json"
    if manifest.exists() and (p / "hf" / "config.json").exists():
        template = _read_json(manifest).get("gguf_template")
        _check_config_json(p / "hf" / "config.json")
        return p / "hf", Path(template) if template else None
    if (p / "config.json").exists():
        _check_config_json(p / "config.json")
        return p, None
    raise BadInput(f"{p}: not a GGUF file, a transformers dir or an aligned model dir")


def _check_config_json(path: Path) -> None:
    """A transformers config that is not a JSON object is the user's file at fault, said before loading."""
    try:
        ok = isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise BadInput(f"{path}: not a valid transformers config (JSON object)", "pass an intact model dir to --from")


def encode(tok: Any, sample: Sample, max_length: int) -> tuple[list[int], list[int]] | None:
    """(input ids, labels) with the prompt masked (-100), or None when longer than `max_length`. The prompt is the
    chat template with the generation prompt, exactly as the serving backend renders it."""
    prompt = tok.apply_chat_template(sample.messages, add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    end = end_of_turn_id(tok)
    r_ids = tok(sample.target, add_special_tokens=False)["input_ids"] + [end]
    if len(p_ids) + len(r_ids) > max_length:
        return None
    return p_ids + r_ids, [-100] * len(p_ids) + r_ids


def end_of_turn_id(tok: Any) -> int:
    for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id and i >= 0:
            return i
    if tok.eos_token_id is None:
        raise RecgptError("the tokenizer has no end-of-turn or EOS token")
    return int(tok.eos_token_id)


def _batch(rows: list[tuple[list[int], list[int]]], pad: int, device: str) -> dict[str, Any]:
    import torch

    n = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def autocast_dtype(device: str, precision: str) -> Any:
    """torch.bfloat16 when the forward pass should run under bf16 autocast, else None (fp32). The weights and the
    optimiser stay fp32 either way. `auto` takes bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX via
    oneDNN), where it measured 1.7x a fp32 step (bench/README.md); elsewhere bf16 is emulated and slower."""
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16" or device == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() \
        else None


def reply_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the reply tokens, the loss transformers computes from `labels`, with the output
    layer applied to those positions only: replies are ~15% of a sample, and the 49k-word output layer over every
    prompt position was a fifth of a CPU step and most of its memory."""
    import torch.nn.functional as F

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != -100
    logits = inner.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep])


def _plan(n_by_stage: list[int], cfg: SFTConfig) -> list[tuple[int, list[int]]]:
    """The whole run as (stage, sample positions within the stage) per step, seeded, so a resume replays the same
    order and skips the steps already done."""
    rng = random.Random(cfg.seed)
    steps: list[tuple[int, list[int]]] = []
    for stage, n in enumerate(n_by_stage):
        per_epoch = math.ceil(n / cfg.batch_size)
        # --max-steps wins over --epochs (more epochs when the data is short), split evenly over the stages
        epochs = math.ceil(cfg.max_steps / len(n_by_stage) / per_epoch) if cfg.max_steps and n else cfg.epochs
        for _ in range(epochs if n else 0):
            order = list(range(n))
            rng.shuffle(order)
            steps += [(stage, order[i: i + cfg.batch_size]) for i in range(0, n, cfg.batch_size)]
        if cfg.max_steps:
            steps = steps[: math.ceil(cfg.max_steps * (stage + 1) / len(n_by_stage))]
    return steps[: cfg.max_steps] if cfg.max_steps else steps


def _peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def train_sft(
    samples: Sequence[Sample],
    out: str | Path,
    config: SFTConfig | None = None,
    *,
    base: str | Path | None = None,
    cache_dir: str | Path = ".recgpt-cache",
    export: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> SFTResult:
    """Fine-tune `base` (default: the embedded model) on `samples`; see the module docstring for what `out` gets."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # peft asks transformers a deprecated question on every model it wraps; the warning is theirs, not the user's
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    cfg = config or SFTConfig()
    if not samples:
        raise BadInput("no alignment samples to train on", "build some with `recgpt align data`")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file, expected an output folder")
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base_dir, template = resolve_base(base, Path(cache_dir))
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    pad = tok.pad_token_id if tok.pad_token_id is not None else end_of_turn_id(tok)

    groups = cfg.stages or [sorted({s.task for s in samples})]
    by_stage: list[list[tuple[list[int], list[int]]]] = []
    skipped = 0
    for group in groups:
        encoded = []
        for s in samples:
            if s.task in group:
                e = encode(tok, s, cfg.max_length)
                skipped += e is None
                if e is not None:
                    encoded.append(e)
        by_stage.append(encoded)
    if not any(by_stage):
        raise BadInput(f"every sample is longer than --max-length {cfg.max_length} or outside --stages {groups}")
    # a stage the data has no samples for (a curriculum file listing more than was built) takes no step budget;
    # the log still numbers stages as `groups` does
    stage_no = [i for i, b in enumerate(by_stage) if b]
    by_stage = [b for b in by_stage if b]
    plan = _plan([len(b) for b in by_stage], cfg)
    identity = {"data": data_hash(samples), "config": cfg.fingerprint(), "base": str(base_dir)}

    torch.manual_seed(cfg.seed)
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if cfg.gradient_checkpointing:  # non-reentrant: gradients reach LoRA weights although the inputs need none
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name for it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=list(LORA_TARGETS),
                                                 task_type="CAUSAL_LM"))
    model.to(device)
    amp = autocast_dtype(device, cfg.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = len(plan)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, total)))))

    ckpt = out / "checkpoint"
    start = _resume(ckpt, identity, model, opt, sched)
    log = (out / "train_log.jsonl").open("ab")
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()

    # Ctrl-C and a polite kill stop between steps: a step cut after opt.step() but before `done` moved would save
    # weights one update ahead of the step count, and the resumed run would differ. A second signal stops now
    # (and saves nothing: the last periodic checkpoint is consistent).
    stop: dict[str, Any] = {"asked": False, "now": False}

    def on_signal(signum: int, frame: Any) -> None:
        if stop["asked"]:
            stop["now"] = True
            raise KeyboardInterrupt
        stop["asked"] = True

    old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    model.train()
    done = start  # steps whose update is applied
    try:
        for step in range(start, total):
            stage, positions = plan[step]
            rows = [by_stage[stage][i] for i in positions]
            batch = _batch(rows, pad, device)
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp is not None):
                loss = reply_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            value = float(loss.detach())
            losses.append(value)
            tokens += int(batch["attention_mask"].sum())
            elapsed = time.perf_counter() - t0
            entry = {"step": step + 1, "of": total, "stage": stage_no[stage], "loss": round(value, 5),
                     "lr": sched.get_last_lr()[0], "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1)}
            log.write(orjson.dumps(entry) + b"\n")
            log.flush()
            if progress is not None:
                progress(entry)
            if done % cfg.save_every == 0 and done < total:
                _save(ckpt, identity, done, model, opt, sched)
            if stop["asked"]:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if not stop["now"]:
            _save(ckpt, identity, done, model, opt, sched)
        raise  # the CLI says "rerun to resume" and exits 130
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        log.close()
    train_s = time.perf_counter() - t0
    _save(ckpt, identity, total, model, opt, sched)
    peak = _peak_memory_mb(device)
    # an adapter of a GGUF base is also written as a llama.cpp LoRA GGUF: `--model OUT` serves it without export
    gguf_base = template if base is None or str(base).endswith(".gguf") else None
    _finish(model, tok, out, cfg, template, export, gguf_base)
    by_step = _logged_losses(out / "train_log.jsonl", total)  # the whole run's, across resumes
    result = SFTResult(out, total, sum(len(b) for b in by_stage), skipped, by_step[0] if by_step else float("nan"),
                       by_step[-1] if by_step else float("nan"), train_s, tokens / max(train_s, 1e-9), peak,
                       resumed_from=start, losses=losses)
    earlier = _read_json(out / "manifest.json")
    if start == total and earlier.get("data") == identity["data"] and earlier.get("steps") == total:
        # a rerun of a finished run trained nothing: keep what the training itself measured
        result.train_s, result.tokens_per_s = earlier.get("train_s", 0.0), earlier.get("tokens_per_s", 0.0)
        result.peak_memory_mb, result.resumed_from = earlier.get("peak_memory_mb", 0.0), earlier.get("resumed_from", 0)
    adapter_base: dict[str, str] = {}
    if cfg.method == "lora" and gguf_base is not None:  # what `adapter.gguf` is a delta of (llm.aligned)
        from recgpt_cli.llm.aligned import EMBEDDED
        from recgpt_cli.llm.fingerprint import file_sha256

        adapter_base = {"adapter_base": EMBEDDED if base is None else str(Path(gguf_base).resolve()),
                        "adapter_base_sha256": file_sha256(gguf_base)}
    manifest = {"base": str(base_dir), "gguf_template": str(template) if template else None, **adapter_base,
                **identity,
                "config": asdict(cfg), "steps": total, "samples": result.samples, "skipped_long": skipped,
                "tasks": sorted({s.task for s in samples}), "train_s": round(train_s, 1), "device": device,
                # what a trained judge saw in training, so that scoring it on those labels is refused
                "judge_inputs": sorted({str(s.meta["input_hash"]) for s in samples if s.meta.get("input_hash")}),
                "precision": "bf16" if amp is not None else "fp32",
                "tokens_per_s": round(result.tokens_per_s, 1), "peak_memory_mb": round(peak, 1),
                "resumed_from": result.resumed_from, "first_loss": _finite(result.first_loss),
                "last_loss": _finite(result.last_loss)}
    manifest.update(train_s=round(result.train_s, 1), tokens_per_s=round(result.tokens_per_s, 1),
                    peak_memory_mb=round(result.peak_memory_mb, 1))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    # the LLM stages refuse to serve these users under another split
    write_trained_users(out, samples, trained_users(base_dir))
    return result


def _logged_losses(log: Path, total: int) -> list[float]:
    """Loss per step 1..total from the training log; a step redone after a kill counts by its last entry."""
    last: dict[int, float] = {}
    if log.exists():
        for line in log.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                entry = orjson.loads(line)
                last[int(entry["step"])] = float(entry["loss"])
    return [last[k] for k in sorted(last) if k <= total]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(x: float) -> float | None:
    """JSON has no NaN: a loss that was never measured is null."""
    return x if math.isfinite(x) else None


def _trainable_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}


def _save(ckpt: Path, identity: dict[str, Any], step: int, model: Any, opt: Any, sched: Any) -> None:
    """Replace the checkpoint atomically: write a sibling dir, then swap it in."""
    import torch

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # the RNG too (LoRA dropout): a resumed run continues exactly as an uninterrupted one would
    torch.save({"weights": _trainable_state(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state()}, tmp / "state.pt")
    (tmp / "progress.json").write_text(json.dumps({**identity, "step": step}))
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _resume(ckpt: Path, identity: dict[str, Any], model: Any, opt: Any, sched: Any) -> int:
    """The step to start from: 0 without a checkpoint, its step with one that matches this run."""
    import torch

    if not ckpt.exists() and ckpt.with_name(ckpt.name + ".old").exists():  # killed between the two renames
        os.replace(ckpt.with_name(ckpt.name + ".old"), ckpt)
    progress = ckpt / "progress.json"
    if not progress.exists():
        return 0
    saved = json.loads(progress.read_text())
    if {k: saved.get(k) for k in identity} != identity:
        raise BadInput(f"{ckpt.parent}: holds a run with other data or settings",
                       "use another --out, or delete that folder to start over")
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    missing = model.load_state_dict(state["weights"], strict=False)
    if missing.unexpected_keys:
        raise RecgptError(f"{ckpt}: checkpoint weights do not fit the model ({missing.unexpected_keys[:3]})")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(saved["step"])


def _finish(model: Any, tok: Any, out: Path, cfg: SFTConfig, template: Path | None, export: bool,
            gguf_base: Path | None = None) -> None:
    """The adapter (LoRA; + `adapter.gguf` over `gguf_base`), then with `export` the merged transformers dir and
    the GGUF."""
    model.eval()
    if cfg.method == "lora":
        _replace_dir(out / "adapter", model.save_pretrained)
        if gguf_base is not None:
            from recgpt_cli.align.gguf_export import export_lora_gguf

            export_lora_gguf(out / "adapter", out / "adapter.gguf", template=gguf_base)
        if not export:
            return
        model = model.merge_and_unload()
    elif not export:  # full fine-tuning: the weights are the model; keep them
        _replace_dir(out / "hf", lambda d: (model.save_pretrained(d, safe_serialization=True), tok.save_pretrained(d)))
        return
    write_model(model, tok, out, template, cfg.gguf_type)


def write_model(model: Any, tok: Any, out: Path, template: Path | None, gguf_type: str) -> None:
    """`out/hf` (float32 transformers dir) and `out/model.gguf` from a merged model."""
    import torch

    from recgpt_cli.align.gguf_export import export_gguf

    model = model.to("cpu").to(torch.float32)
    _replace_dir(out / "hf", lambda d: (model.save_pretrained(d, safe_serialization=True), tok.save_pretrained(d)))
    export_gguf(out / "hf", out / "model.gguf", template=template, out_type=gguf_type)


def export_trained(out: str | Path, *, base: str | Path | None = None, cache_dir: str | Path = ".recgpt-cache",
                   gguf_type: str = "q8_0") -> Path:
    """Merge `out/adapter` into its base and write `out/hf` + `out/model.gguf` (for adapters trained elsewhere,
    e.g. on a GPU box with `--no-export`). `base` defaults to the embedded model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recgpt_cli.align.gguf_export import export_gguf

    check_gguf_type(gguf_type)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)  # peft's
    out = Path(out)
    has_adapter = (out / "adapter" / "adapter_config.json").exists()
    if not has_adapter and not (out / "hf" / "config.json").exists():
        raise BadInput(f"{out}: no adapter/ or hf/ to export", "train with `recgpt align sft` first")
    base_dir, template = resolve_base(base, Path(cache_dir))
    if not has_adapter:  # full fine-tune: the weights are in hf/, only the GGUF is missing
        export_gguf(out / "hf", out / "model.gguf", template=template, out_type=gguf_type)
        return out
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(out / "adapter")).merge_and_unload()
    write_model(model, tok, out, template, gguf_type)
    manifest = out / "manifest.json"
    if manifest.exists():  # serve-side facts: where the merged model came from here
        m = json.loads(manifest.read_text())
        m.update(base=str(base_dir), gguf_template=str(template) if template else None)
        manifest.write_text(json.dumps(m, indent=1))
    return out


def _replace_dir(target: Path, write: Callable[[Path], Any]) -> None:
    """Write into a sibling temp dir, then swap it in: a crash never leaves half a model under `target`."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
