"""Self-training by rejection sampling (RecGPT §2.1.2 stage 3): the current model answers each input k times at a
temperature above 0, the stage's rules keep the answers that pass, the passing answers become samples, and the
model is trained again on them with the earlier samples.

Tasks: interests, tags and explanations (§2.4.1's LLM_RE: per interest of a context whose category the user engaged
with after the cut, the explanation prompt with that category's item information, as `explain --build-table` serves
it; the safety rules of `explain` decide). An answer passes when the rules remove none of its items and keep at least
one (the strict form of the rule pass rate the bench reports), and, when a trained judge is given (§3.2: `judge` =
`judge_filter(...)`, used once `judge_beats_rules` says it agrees with held-out labels better than the rules alone),
the judge passes every item. Per input the first passing answer is kept (dedupe by content hash across inputs), so
an easy input cannot flood a round; for explanations, the passing answer whose opening words the round has used
least, so that one template ("This item is a ...") does not become everything the next model learns. The loop
stops when a round's pass rate does not beat the previous round's by `min_gain`: that round gained nothing.

`pool=True` (tags only) is rejection sampling per tag instead of per answer: the tags of the k answers to one input
go through the rules together (so a tag repeated across answers counts once), the judge drops the tags it fails, and
the survivors, at most `tags_per_call`, become one sample whose prompt is rendered again to ask for exactly that
many. A small model whose answers each carry one stale or repeated tag never passes the strict form, so the strict
form gives it nothing to learn from; pooled, every tag the rules keep is a target. Rounds then compare the tag-level
pass rate (kept tags / tags written, each answer judged alone: the bench's "tag rule pass rate").

`constrain` (tags): answers are decoded under `predict-tags --constrain` (the catalogue's fresh, valid product
phrases as an enum), as the stage serves them; an interest with no phrase left is not an input.

    from recgpt_cli.align.self_train import rejection_samples
    samples, stats = rejection_samples(contexts, llm, task="tags", k=4, round_no=1, catalogue=catalogue)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recgpt_cli.align.data import CutContext, LogsConfig
from recgpt_cli.align.samples import Sample, reply_json
from recgpt_cli.catalogue import Catalogue
from recgpt_cli.errors import BadInput
from recgpt_cli.explain import EXPLAIN_PARAMS, EXPLANATION_MAX_CHARS, ExplanationOutput
from recgpt_cli.interests import clean_interests, default_params, interest_list_model, mining_variables, resolve_prompt
from recgpt_cli.judge.head import HeadJudge
from recgpt_cli.llm.base import SamplingParams
from recgpt_cli.llm.structured import StructuredLLM
from recgpt_cli.tags import TagVocabulary, clean_tags, tag_list_model, tag_variables

if TYPE_CHECKING:
    import duckdb

TEMPERATURE = 0.7
TASK_PROMPTS = {"interests": "interest_mining", "tags": "tag_prediction", "explanations": "explanation"}


@dataclass(frozen=True)
class ExplainInputs:
    """What explanation samples need from the store: Item Information per category leaf (as `explain
    --build-table` writes it) and the catalogue's brands and category names (lower-case) for the factuality
    rules."""

    item_texts: Mapping[str, str]
    brands: frozenset[str] = frozenset()
    categories: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_con(cls, con: duckdb.DuckDBPyConnection) -> ExplainInputs:
        from recgpt_cli.explain import catalogue_brands, catalogue_leaves, category_texts, read_items

        items = read_items(con)
        return cls(category_texts({it.leaf for it in items.values()}, items), catalogue_brands(items),
                   catalogue_leaves(items))


@dataclass
class RoundStats:
    round: int
    inputs: int = 0
    answers: int = 0
    passed: int = 0
    failed_calls: int = 0
    samples: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # pooled: what the rules removed from the pooled tags
    items: int = 0  # tags written (tags task), each answer judged alone by the rules
    kept_items: int = 0

    @property
    def pass_rate(self) -> float:
        return self.passed / self.answers if self.answers else 0.0

    @property
    def item_pass_rate(self) -> float:
        return self.kept_items / self.items if self.items else 0.0


def rejection_samples(
    contexts: Iterable[CutContext],
    llm: StructuredLLM,
    *,
    task: str,
    k: int = 4,
    round_no: int = 1,
    config: LogsConfig | None = None,
    catalogue: Catalogue | None = None,
    temperature: float = TEMPERATURE,
    source: str = "self-train",
    judge: JudgeFilter | None = None,
    explain_inputs: ExplainInputs | None = None,
    pool: bool = False,
    constrain: str = "none",
    on_topic: bool = False,
) -> tuple[list[Sample], RoundStats]:
    """k answers per input (seeds 0..k-1) from `llm`; the passing ones, as samples of `source`. A teacher (§2.1.2
    stage 2: any backend, e.g. a bigger model behind an OpenAI-compatible server) is the same call with k=1,
    temperature 0 and source `teacher`. Explanations need `explain_inputs`; `on_topic` also removes those that
    name neither their interest nor their item (`explain.names_subject`, counted as `off_topic`). `pool`: per-tag
    rejection (module docstring). `constrain`: tags are decoded as `predict-tags --constrain` serves them (needs
    the catalogue)."""
    if task not in TASK_PROMPTS:
        raise BadInput(f"--task {task}: self-training covers {', '.join(TASK_PROMPTS)}")
    if pool and task != "tags":
        raise BadInput(f"pooled rejection sampling is for tags; {task} answers are judged whole")
    if task == "explanations" and explain_inputs is None:
        raise BadInput("explanation samples need the catalogue's item information (ExplainInputs.from_con)")
    if k < 1:
        raise BadInput("--k must be at least 1")
    vocab = TagVocabulary.serving(constrain, catalogue if task == "tags" else None, llm)
    cfg = config or LogsConfig()
    stats = RoundStats(round_no)
    seen: set[str] = set()
    openers: Counter[str] = Counter()
    out: list[Sample] = []
    for ctx in contexts:
        for messages, answers in _answers(ctx, llm, task, k, cfg, catalogue, temperature, stats, judge,
                                          explain_inputs, pool, (constrain, vocab) if vocab else None, on_topic):
            stats.inputs += 1
            passing = [items for items in answers if items is not None]
            if not passing:
                continue
            if task == "explanations":  # min() keeps the first of equals: the first passing answer by default
                items = min(passing, key=lambda a: openers[opener(a[0])])
                openers[opener(items[0])] += 1
                reply: dict[str, Any] = {"explanation": items[0]}
            else:
                items = passing[0]
                reply = {task: items}
            sample = Sample(TASK_PROMPTS[task], source, messages, reply_json(reply), round=round_no,
                            user_id=ctx.user_id, meta={"cut": ctx.cut.isoformat(), "split": ctx.record.get("split")})
            if sample.hash not in seen:
                seen.add(sample.hash)
                out.append(sample)
    stats.samples = len(out)
    return out, stats


_OPENER_WORD = re.compile(r"[a-z']+")


def opener(text: str) -> str:
    """The first two words of an explanation, lower-case: what a template shares ("this item")."""
    return " ".join(_OPENER_WORD.findall(text.lower())[:2])


def _answers(ctx: CutContext, llm: StructuredLLM, task: str, k: int, cfg: LogsConfig, catalogue: Catalogue | None,
             temperature: float, stats: RoundStats, judge: JudgeFilter | None = None,
             explain_inputs: ExplainInputs | None = None, pool: bool = False,
             constrained: tuple[str, TagVocabulary] | None = None, on_topic: bool = False,
             ) -> Iterable[tuple[list[dict[str, str]], list[list[Any] | None]]]:
    """Per input of this context: (rendered prompt, per answer the reply items when it passed, else None)."""
    day = ctx.cut.date()
    if task == "explanations":
        assert explain_inputs is not None
        yield from _explanation_answers(ctx, llm, k, temperature, stats, judge, explain_inputs, on_topic)
        return
    if task == "interests":
        prompt = resolve_prompt("interest_mining", "InterestList")
        variables = mining_variables(ctx.record, day=day, max_interests=cfg.max_interests)

        def check_interests(value: Any) -> list[Any] | None:
            kept, removed = clean_interests(value.interests, ctx.record, max_interests=cfg.max_interests)
            if judge is not None and kept and not any(removed.values()):
                base = {"user_id": ctx.user_id, "attributes": ctx.record.get("attributes") or {},
                        "behaviors": ctx.record.get("compressed", "")}
                failed = sum(not judge("interests", {**base, "interest": i["interest"], "reason": i["reason"]})
                             for i in kept)
                removed = {**removed, "judge": failed}
            return _judge([{k: i[k] for k in ("interest", "stage", "reason")} for i in kept], removed, stats)

        yield prompt.render(variables), _sample(llm, prompt, variables, interest_list_model(cfg.max_interests),
                                                default_params(cfg.max_interests, chars_per_item=230), k,
                                                temperature, stats, check_interests)
        return
    prompt = resolve_prompt("tag_prediction", "TagList")
    for interest in ctx.interests:
        offered = None
        if constrained is not None and catalogue is not None:
            offered = constrained[1].allowed(constrained[0], ctx.record, [interest], day=day, catalogue=catalogue)
            if not offered:  # nothing fresh and valid to name: no input (predict-tags makes no call either)
                continue
        output = tag_list_model(cfg.tags_per_call, offered)
        variables = tag_variables(ctx.record, [interest], day=day, n_tags=cfg.tags_per_call, focus=True)
        base = {"user_id": ctx.user_id, "attributes": ctx.record.get("attributes") or {},
                "behaviors": ctx.record.get("compressed", ""), "interests": [interest["interest"]],
                "interest": interest["interest"]}

        def rules(tags: list[Any], shown: dict[str, Any] = interest, count: bool = True
                  ) -> tuple[list[dict[str, str]], dict[str, int]]:
            kept, removed = clean_tags([(t, [shown]) for t in tags], ctx.record, day=day, n_tags=cfg.tags_per_call,
                                       catalogue=catalogue)
            if count:  # the tag pass rate counts answers, not the pooled list
                stats.items += len(tags)
                stats.kept_items += len(kept)
            return kept, removed

        def reply(kept: list[dict[str, str]]) -> list[dict[str, str]]:
            return [{"item_tag": t["tag"], "reason": t["reason"], "serves_interest": t["interest_id"]} for t in kept]

        def check_tags(value: Any, base: dict[str, Any] = base) -> list[Any] | None:
            kept, removed = rules(value.tags)
            if judge is not None and kept and not any(removed.values()):
                failed = sum(not judge("tags", {**base, "tag": t["tag"], "reason": t["reason"]}) for t in kept)
                removed = {**removed, "judge": failed}
            return _judge(reply(kept), removed, stats)

        params = default_params(cfg.tags_per_call, chars_per_item=190)
        if not pool:
            yield prompt.render(variables), _sample(llm, prompt, variables, output, params, k, temperature, stats,
                                                    check_tags)
            continue
        written: list[Any] = []
        for value in _sample(llm, prompt, variables, output, params, k, temperature, stats, lambda v: [v]):
            if value is not None:  # each answer is also judged alone: the tag and strict pass rates
                alone, removed_alone = rules(value[0].tags)
                stats.passed += bool(alone) and not any(removed_alone.values())
                written += value[0].tags
        kept, removed = rules(written, count=False)
        if judge is not None:
            passed = [t for t in kept if judge("tags", {**base, "tag": t["tag"], "reason": t["reason"]})]
            removed = {**removed, "judge": len(kept) - len(passed)}
            kept = passed
        for rule, n in removed.items():
            stats.removed[rule] = stats.removed.get(rule, 0) + n
        if kept:
            # the prompt asks for exactly the number of tags its reply holds (train = serve)
            yield prompt.render({**variables, "n_tags": len(kept)}), [reply(kept)]
        else:
            yield prompt.render(variables), [None]


def _explanation_answers(ctx: CutContext, llm: StructuredLLM, k: int, temperature: float, stats: RoundStats,
                         judge: JudgeFilter | None, inputs: ExplainInputs, on_topic: bool = False,
                         ) -> Iterable[tuple[list[dict[str, str]], list[list[Any] | None]]]:
    """One input per interest whose category the user engaged with after the cut (a recommendation that was
    right): the explanation prompt for (interest, that category), checked by explain's safety rules."""
    from recgpt_cli.explain import names_subject
    from recgpt_cli.safety import check_explanation, pii_terms_from_attributes, tidy_truncated

    prompt = resolve_prompt("explanation", "ExplanationOutput")
    engaged = {e.leaf for e in ctx.future}
    pii = pii_terms_from_attributes(ctx.record.get("attributes"))
    for interest in ctx.interests:
        leaf = ctx.leaf_of.get(interest["interest"])
        if leaf is None or leaf not in engaged or leaf not in inputs.item_texts:
            continue
        facts = inputs.item_texts[leaf]
        variables = {"interest": interest["interest"], "date": ctx.cut.date().isoformat(), "item": facts}

        def check(value: Any, facts: str = facts, shown: str = interest["interest"]) -> list[Any] | None:
            cut_off = len(value.explanation.strip()) >= EXPLANATION_MAX_CHARS - 1
            text = tidy_truncated(value.explanation, EXPLANATION_MAX_CHARS)
            res = check_explanation(text, pii_terms=pii, item_text=facts, brands=inputs.brands,
                                    categories=inputs.categories, cut_off=cut_off)
            removed = {rule: 1 for rule in res.failures}
            if on_topic and res.ok and not names_subject(res.text, shown, facts):
                removed["off_topic"] = 1
            if judge is not None and res.ok and not removed:  # only an answer the rules passed goes to the judge
                sample = {"user_id": ctx.user_id, "interest": shown, "item": facts, "explanation": res.text}
                removed["judge"] = int(not judge("explanations", sample))
            return _judge([res.text] if res.ok else [], removed, stats)

        yield prompt.render(variables), _sample(llm, prompt, variables, ExplanationOutput, EXPLAIN_PARAMS, k,
                                                temperature, stats, check)


def _sample(llm: StructuredLLM, prompt: Any, variables: dict[str, Any], output: Any, base: SamplingParams, k: int,
            temperature: float, stats: RoundStats, check: Callable[[Any], list[Any] | None]) -> list[list[Any] | None]:
    """k answers (seeds 0..k-1) at `temperature`; each the reply items when the rules pass it, else None."""
    answers: list[list[Any] | None] = []
    for seed in range(k):
        params = SamplingParams(temperature=temperature, top_p=0.95, max_tokens=base.max_tokens, seed=seed)
        gen = llm.generate(prompt, variables, output, params)
        stats.answers += 1
        if gen.value is None:
            stats.failed_calls += 1
            answers.append(None)
        else:
            answers.append(check(gen.value))
    return answers


def _judge(kept: list[Any], removed: dict[str, int], stats: RoundStats) -> list[Any] | None:
    """The rules' verdict on one answer: its items when none was removed, else None (removals counted)."""
    for rule, n in removed.items():
        stats.removed[rule] = stats.removed.get(rule, 0) + n
    if not kept or any(removed.values()):
        return None
    stats.passed += 1
    return kept


JudgeFilter = Callable[[str, dict[str, Any]], bool]  # (judge task, flat judge sample) -> passes


def judge_filter(llm: StructuredLLM, *, use_rules: bool = True) -> JudgeFilter:
    """A trained judge (§3.2) as a rejection filter: True when it passes the sample on every criterion."""
    from recgpt_cli.judge import judge_samples

    def passes(task: str, sample: dict[str, Any]) -> bool:
        rows = list(judge_samples([{**sample, "sample_id": "candidate"}], llm, task, use_rules=use_rules))
        return bool(rows and rows[0]["pass"])

    return passes


def judge_beats_rules(llm: StructuredLLM | HeadJudge, heldout: Sequence[dict[str, Any]], task: str
                      ) -> tuple[bool, dict[str, float]]:
    """Whether judge + rules agree with held-out labels (gold format rows) more often than the rules alone
    (ACC on the sample's pass/fail): the paper's condition for letting a judge filter training data."""
    from recgpt_cli.judge import agreement, judge_samples
    from recgpt_cli.judge.rules import rules_only

    judged = list(llm.rows(heldout, task) if isinstance(llm, HeadJudge) else
                  judge_samples(heldout, llm, task, use_rules=True))
    acc_judge = agreement(judged, heldout, task)["overall"]["acc"]
    acc_rules = agreement(rules_only(task, list(heldout)), heldout, task)["overall"]["acc"]
    return acc_judge > acc_rules, {"judge_acc": acc_judge, "rules_acc": acc_rules}


@dataclass
class SelfTrainReport:
    rounds: list[RoundStats]
    models: list[Path]
    stopped: str


def self_train(
    contexts: Callable[[], Iterable[CutContext]],
    start_model: Path,
    out: Path,
    *,
    make_llm: Callable[[Path], StructuredLLM],
    train: Callable[[list[Sample], Path, Path], Path],
    base_samples: Sequence[Sample] = (),
    tasks: Sequence[str] = ("interests", "tags"),
    rounds: int = 2,
    k: int = 4,
    min_gain: float = 0.01,
    config: LogsConfig | None = None,
    catalogue: Catalogue | None = None,
    on_round: Callable[[RoundStats], None] | None = None,
    judge: JudgeFilter | None = None,
    explain_inputs: ExplainInputs | None = None,
    pool: bool = False,
    constrain: str = "none",
    on_topic: bool = False,
) -> SelfTrainReport:
    """Rounds of generate -> keep the passing -> retrain (`train(samples, from_model, out_dir) -> model dir`), from
    `start_model`. Round r's model lands in `out/round-r`; `base_samples` are trained on again in every round.
    `pool`: tags are rejected one by one (module docstring) and rounds compare the tag-level pass rate."""
    model = start_model
    history: list[RoundStats] = []
    models: list[Path] = []
    stopped = f"ran {rounds} rounds"
    for r in range(1, rounds + 1):
        llm = make_llm(model)
        new: list[Sample] = []
        total = RoundStats(r)
        for task in tasks:
            samples, stats = rejection_samples(contexts(), llm, task=task, k=k, round_no=r, config=config,
                                               catalogue=catalogue, judge=judge, explain_inputs=explain_inputs,
                                               pool=pool and task == "tags", constrain=constrain,
                                               on_topic=on_topic)
            new += samples
            total.inputs += stats.inputs
            total.answers += stats.answers
            total.passed += stats.passed
            total.failed_calls += stats.failed_calls
            total.items += stats.items
            total.kept_items += stats.kept_items
            for rule, n in stats.removed.items():
                total.removed[rule] = total.removed.get(rule, 0) + n
        total.samples = len(new)
        history.append(total)
        if on_round is not None:
            on_round(total)
        rate = (lambda st: st.item_pass_rate) if pool else (lambda st: st.pass_rate)
        if len(history) > 1 and rate(total) < rate(history[-2]) + min_gain:
            stopped = f"round {r} gained nothing (pass rate {rate(total):.3f} vs {rate(history[-2]):.3f})"
            break
        if not new:
            stopped = f"round {r}: no answer passed the rules"
            break
        model = train([*base_samples, *new], model, out / f"round-{r}")
        models.append(model)
    return SelfTrainReport(history, models, stopped)
