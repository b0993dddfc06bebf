"""Run the LLM judge over samples (§3.1 LLM-as-a-Judge): one call per sample, all criteria at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from recgpt_cli.judge.criteria import JudgeTask, get_task
from recgpt_cli.judge.rules import apply_rules
from recgpt_cli.judge.samples import compact_input, expand_record, prompt_variables
from recgpt_cli.llm.base import SamplingParams
from recgpt_cli.llm.batch import run_batch
from recgpt_cli.llm.prompts import Prompt, load_prompt
from recgpt_cli.llm.structured import Generation, StructuredLLM

JUDGE_PARAMS = SamplingParams(temperature=0.0, max_tokens=96, seed=0)


@dataclass
class JudgeStats:
    """Counts for the stderr summary: samples, passes, per-criterion passes, errors, tokens, cache hits."""

    task: str = ""
    n: int = 0
    n_pass: int = 0
    n_errors: int = 0
    n_cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    criterion_pass: Counter[str] = field(default_factory=Counter)
    rules_fired: Counter[str] = field(default_factory=Counter)

    def pass_rates(self) -> dict[str, float]:
        judged = self.n - self.n_errors
        rates = {c: (k / judged if judged else 0.0) for c, k in self.criterion_pass.items()}
        rates["pass"] = self.n_pass / judged if judged else 0.0
        return rates

    def count_verdicts(self, row: dict[str, Any], spec: JudgeTask) -> None:
        """Count a judged row's pass, per-criterion passes and fired rules (the LLM judge's and the heads')."""
        self.n_pass += int(row["pass"])
        self.rules_fired.update(row.get("rules", []))
        for c, label in row["verdicts"].items():
            self.criterion_pass[c] += int(spec.passes(c, label))

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "n": self.n, "pass": self.n_pass, "errors": self.n_errors, "cached": self.n_cached,
                "pass_rates": self.pass_rates(), "rules_fired": dict(self.rules_fired),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "latency_s": round(self.latency_s, 3)}


def judge_samples(
    records: Iterable[dict[str, Any]],
    llm: StructuredLLM,
    task: str,
    *,
    prompt: Prompt | str | None = None,
    params: SamplingParams | None = None,
    use_rules: bool = True,
    stats: JudgeStats | None = None,
    quiet: bool = True,
) -> Iterator[dict[str, Any]]:
    """Judge every sample of `task` in `records` (stage outputs or flat samples; §3, Tables 1/3/6).

    Yields {"task","sample_id","input","verdicts","pass"} (+ "rules" when a post-check fired, + "error" when
    the model gave no valid verdict: then verdicts is {} and pass is False). `pass` is True only when every
    criterion passes (§4.3). `quiet=False` shows a progress bar on stderr.
    """
    spec = get_task(task)
    tmpl = prompt if isinstance(prompt, Prompt) else load_prompt(prompt or spec.prompt)
    params = params or JUDGE_PARAMS
    stats = stats if stats is not None else JudgeStats()
    stats.task = task
    samples = (sample for record in records for sample in expand_record(record, task))

    def one(sample: dict[str, Any]) -> tuple[dict[str, Any], Generation[Any]]:
        return sample, llm.generate(tmpl, prompt_variables(sample, spec.name), spec.output, params)

    # Stats are updated here, in input order, so a concurrent backend never races on them.
    for sample, gen in run_batch(samples, one, desc=f"judge {task}", quiet=quiet,
                                 concurrency=getattr(llm, "concurrency", 1)):
        yield _verdict_row(sample, gen, spec, use_rules, stats)


def _verdict_row(
    sample: dict[str, Any], gen: Generation[Any], spec: JudgeTask, use_rules: bool, stats: JudgeStats
) -> dict[str, Any]:
    stats.n += 1
    stats.n_cached += int(gen.cached)
    stats.prompt_tokens += gen.prompt_tokens
    stats.completion_tokens += gen.completion_tokens
    stats.latency_s += gen.latency_s
    row: dict[str, Any] = {"task": spec.name, "sample_id": sample["sample_id"],
                           "input": compact_input(sample, spec.name)}
    if gen.value is None:
        stats.n_errors += 1
        row.update(verdicts={}, error=gen.error or "no valid verdict")
        row["pass"] = False
        return row
    verdicts = {c: str(v) for c, v in gen.value.model_dump().items()}
    fired = apply_rules(spec.name, sample, verdicts) if use_rules else []
    row["verdicts"] = verdicts
    row["pass"] = spec.sample_passes(verdicts)
    if fired:
        row["rules"] = fired
    stats.count_verdicts(row, spec)
    return row
