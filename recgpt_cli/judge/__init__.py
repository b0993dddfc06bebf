"""LLM judge (§3 Human-LLM Cooperative Judge, §4.3 Human vs LLM-as-a-Judge).

criteria: tasks, label sets and pass rules; samples: stage outputs -> judge samples; rules: cheap
post-checks; run: `judge_samples`; agreement: Table 9 metrics against human labels.
"""

from recgpt_cli.judge.agreement import agreement, binary_metrics, majority_baseline
from recgpt_cli.judge.criteria import TASKS, JudgeTask, get_task
from recgpt_cli.judge.run import JudgeStats, judge_samples
from recgpt_cli.judge.samples import expand_record

__all__ = ["TASKS", "JudgeStats", "JudgeTask", "agreement", "binary_metrics", "expand_record", "get_task",
           "judge_samples", "majority_baseline"]
