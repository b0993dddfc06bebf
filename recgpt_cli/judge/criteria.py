"""Judge tasks, criteria and label sets from the paper (§2.1.2 Table 1, §2.2.1 Table 3, §2.4.1 Table 6, §3.1, §4.3).

Label schemes:
- interests: willingness {spontaneity, necessity}; reasonableness {strong correlation, weak correlation,
  no correlation, hallucination}. Table 1: correct only when spontaneity AND strong correlation.
- tags: relevance, consistency, specificity, validity, each binary {Yes, No} (§3.1 "Binary Classification").
- explanations: relevance, factuality, clarity multi-level {Excellent, Good, Bad} (§3.1 "Multi-level"), safety
  binary {Yes, No} (privacy leak / hard sell is present or not).
§4.3: a binary criterion passes only on "Yes", a multi-level one on "Excellent" or "Good"; a sample passes only
when every criterion passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

YES_NO = ("Yes", "No")
MULTI_LEVEL = ("Excellent", "Good", "Bad")
WILLINGNESS = ("spontaneity", "necessity")
REASONABLENESS = ("strong correlation", "weak correlation", "no correlation", "hallucination")


class _Verdicts(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InterestVerdicts(_Verdicts):
    willingness: Literal["spontaneity", "necessity"]
    reasonableness: Literal["strong correlation", "weak correlation", "no correlation", "hallucination"]


class TagVerdicts(_Verdicts):
    relevance: Literal["Yes", "No"]
    consistency: Literal["Yes", "No"]
    specificity: Literal["Yes", "No"]
    validity: Literal["Yes", "No"]


class ExplanationVerdicts(_Verdicts):
    relevance: Literal["Excellent", "Good", "Bad"]
    factuality: Literal["Excellent", "Good", "Bad"]
    clarity: Literal["Excellent", "Good", "Bad"]
    safety: Literal["Yes", "No"]


@dataclass(frozen=True)
class JudgeTask:
    """One judge task: its prompt file, output model, and per-criterion (allowed labels, passing labels)."""

    name: str
    prompt: str
    output: type[_Verdicts]
    criteria: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]

    def allowed(self, criterion: str) -> tuple[str, ...]:
        return self.criteria[criterion][0]

    def passes(self, criterion: str, label: str) -> bool:
        """§4.3: does this label pass this criterion?"""
        return label in self.criteria[criterion][1]

    def sample_passes(self, verdicts: dict[str, str]) -> bool:
        """A sample is qualified only when it passes every criterion (Tables 1/3/6: any ✗ -> ✗)."""
        return all(c in verdicts and self.passes(c, verdicts[c]) for c in self.criteria)

    def check_labels(self, labels: dict[str, str]) -> str | None:
        """None if `labels` has exactly one allowed label per criterion, else what is wrong."""
        for c in self.criteria:
            if c not in labels:
                return f"missing label for criterion {c!r}"
            if labels[c] not in self.allowed(c):
                return f"{c}: {labels[c]!r} is not one of {', '.join(self.allowed(c))}"
        extra = set(labels) - set(self.criteria)
        return f"unknown criteria: {', '.join(sorted(extra))}" if extra else None


TaskName = Literal["interests", "tags", "explanations"]

TASKS: dict[str, JudgeTask] = {
    "interests": JudgeTask(
        "interests", "judge_interests", InterestVerdicts,
        {"willingness": (WILLINGNESS, ("spontaneity",)), "reasonableness": (REASONABLENESS, ("strong correlation",))},
    ),
    "tags": JudgeTask(
        "tags", "judge_tags", TagVerdicts,
        {c: (YES_NO, ("Yes",)) for c in ("relevance", "consistency", "specificity", "validity")},
    ),
    "explanations": JudgeTask(
        "explanations", "judge_explanations", ExplanationVerdicts,
        {
            "relevance": (MULTI_LEVEL, ("Excellent", "Good")),
            "factuality": (MULTI_LEVEL, ("Excellent", "Good")),
            "clarity": (MULTI_LEVEL, ("Excellent", "Good")),
            "safety": (YES_NO, ("Yes",)),
        },
    ),
}


def get_task(name: str) -> JudgeTask:
    from recgpt_cli.errors import BadInput

    if name not in TASKS:
        raise BadInput(f"unknown judge task {name!r}", f"use one of: {', '.join(TASKS)}")
    return TASKS[name]
