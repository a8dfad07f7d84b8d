"""The adherence probe (`train.adherence_probe`), inside the train stage.

At each checkpoint the train stage hands the model it is training to
`Probe.after_checkpoint`: the first N suite prompts are generated greedily in
one batch with the eval stage's own code (`generate_suite`, `score_generated`),
so no other process starts and no weights load. The score and labels become a
Metric row (`probe_adherence`, `probe_labels`) at the checkpoint's iteration,
and `jobs.probe.decide` says whether training ends there.

Generation runs with the model in eval mode and puts back the mode it found,
so dropout and the training steps after it are unaffected.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from sqlmodel import col, select

from jobs.db import Metric
from jobs.early_stop import stop_early
from jobs.experiment_spec import AdherenceProbe
from jobs.probe import ProbeResult, StopDecision, decide
from jobs.suite import EvalSuite, SuitePrompt, load_suite
from worker.context import StageContext, metric_write, stage_write
from worker.stages.eval import generate_suite, score_generated


@dataclass
class Probe:
    ctx: StageContext
    rule: AdherenceProbe
    suite: EvalSuite
    prompts: list[SuitePrompt]
    max_tokens: int
    tokenizer: Any
    history: list[ProbeResult] = field(default_factory=list)
    seconds: float = 0.0  # this attempt's probes, for the share of training time

    def measure(self, model: Any, iteration: int) -> ProbeResult:
        """Generate and score the probe prompts with `model` as it is now."""
        tic = time.perf_counter()
        was_training = model.training
        model.eval()  # no dropout while generating
        try:
            generated, _ = generate_suite(
                model, self.tokenizer, self.suite, self.prompts, self.max_tokens
            )
        finally:
            model.train(was_training)
        scores = [score_generated(item, self.suite) for item in generated]
        mx.clear_cache()  # the batch's KV caches are no part of training's memory
        labels = dict(Counter(s.label for s in scores))
        adherence = sum(s.score for s in scores) / max(len(scores), 1)
        elapsed = time.perf_counter() - tic
        self.seconds += elapsed
        print(
            f"probe {iteration}: adherence {adherence:.3f} over {len(scores)} prompts "
            f"{labels} in {elapsed:.2f} s",
            flush=True,
        )
        return ProbeResult(iteration, adherence, labels)

    def after_checkpoint(self, model: Any, iteration: int, last: bool) -> StopDecision | None:
        """Probe the checkpoint just saved, store it, and decide whether training
        stops here (never at the `last` iteration: there is nothing left to stop)."""
        result = self.measure(model, iteration)
        self.history.append(result)
        decision = None if last else decide(self.history, self.rule)
        with metric_write(self.ctx, iteration, probe_adherence=result.adherence,
                          probe_labels=dict(result.labels)) as session:  # fmt: skip
            if decision is not None:
                stop_early(session, self.ctx.stage_id, self.ctx.attempt, iteration, decision.reason)
        if decision is not None:
            print(f"stopping early after iteration {iteration}: {decision.reason}", flush=True)
        return decision


def stored_probes(ctx: StageContext, upto: int) -> list[ProbeResult]:
    """The probes earlier attempts of this stage stored up to checkpoint `upto`
    (the one a resumed attempt starts from), oldest first."""
    with stage_write(ctx) as session:
        rows = session.exec(
            select(Metric)
            .where(
                Metric.stage_id == ctx.stage_id,
                col(Metric.probe_adherence).is_not(None),
                Metric.iteration <= upto,
            )
            .order_by(col(Metric.iteration), col(Metric.id))
        ).all()
    by_iteration = {r.iteration: r for r in rows}  # the newest row of an iteration wins
    return [
        ProbeResult(k, float(r.probe_adherence or 0.0), dict(r.probe_labels or {}))
        for k, r in sorted(by_iteration.items())
    ]


def make_probe(ctx: StageContext, tokenizer: Any, start: int) -> Probe | None:
    """The train stage's probe, or None when the spec asks for none. A resumed
    attempt (`start` > 0) picks up the probes stored before its checkpoint."""
    rule = ctx.spec.train.adherence_probe
    if rule is None:
        return None
    suite = load_suite(ctx.spec.eval.suite)
    max_tokens = rule.max_tokens or ctx.spec.eval.max_tokens or suite.generation.max_tokens
    history = stored_probes(ctx, start) if start else []
    if isinstance(rule.prompts, int):
        prompts = list(suite.prompts)[: rule.prompts]
    else:  # ids, checked against the suite at submission
        wanted = set(rule.prompts)
        prompts = [p for p in suite.prompts if p.id in wanted]
    return Probe(ctx, rule, suite, prompts, max_tokens, tokenizer, history)
