"""Activity ``generate_queries``: ask the model for search queries as JSON.

Model output is untrusted input. The reply must be a JSON array of non-empty
strings; anything else is re-asked a bounded number of times (each re-ask is a
new, billed call, counted as failed spend), then the activity fails with the
non-retryable ``InvalidModelOutput``: retrying the whole activity would ask the
same question again and spend more for the same answer. Every ask -- the first,
a re-ask, the first of a retried attempt -- is checked against the run's budget
before it is sent (:func:`~steadfast_worker.activities.base.ensure_affordable`), and
reserved from the day's budget (:mod:`~steadfast_worker.activities.daybudget`).

The prompt follows the simulator's contract (:mod:`steadfast_dev.sim.content`):
"Return a JSON array of N search queries" and a ``Topic:`` line. A real model
follows the same instructions.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from steadfast_contract import budget, pricing, stops
from steadfast_contract.activities import (
    GENERATE_QUERIES,
    GenerateQueriesInput,
    GenerateQueriesOutput,
    LlmCall,
)
from steadfast_contract.text import well_formed
from steadfast_worker import errors, llm
from steadfast_worker.activities.base import (
    ActivityBase,
    FailureDetailsFactory,
    reserve_request,
    settle_request,
)
from steadfast_worker.activities.heartbeat import Carried

SYSTEM = (
    "You are a research assistant planning web searches. Answer with only the "
    "requested JSON, no prose and no code fence."
)
MAX_QUERY_CHARS = 300


def prompt(topic: str, count: int) -> str:
    return (
        f"Return a JSON array of {count} search queries that together cover the topic "
        f"below from different angles (market size, key players, risks, recent news).\n"
        f"Topic: {topic}"
    )


def reask_prompt(topic: str, count: int, problem: str) -> str:
    return (
        f"A previous answer to this request was rejected ({problem}). Return a JSON array "
        f"of {count} search queries as strings, and nothing else.\nTopic: {topic}"
    )


def parse_queries(text: str, count: int) -> list[str]:
    """The queries in ``text``; raises ValueError saying what is wrong with it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        # Models sometimes fence JSON despite instructions; the content is still usable.
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        data: Any = json.loads(stripped)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg} at char {err.pos})") from None
    except RecursionError:
        # A few thousand brackets, well within max_tokens, nest past the parser's limit.
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON array, got {type(data).__name__}")
    queries = [q.strip() for q in data if isinstance(q, str) and q.strip()]
    if len(queries) != len(data) or not queries:
        raise ValueError("the array must hold only non-empty strings")
    # JSON may spell a NUL or a lone surrogate as an escape: no request carries them.
    return [well_formed(q[:MAX_QUERY_CHARS]) for q in queries[:count]]


class QueriesActivities(ActivityBase):
    @activity.defn(name=GENERATE_QUERIES)
    async def generate_queries(self, inp: GenerateQueriesInput) -> GenerateQueriesOutput:
        async with self.tracked(
            GENERATE_QUERIES, billed=True, model=inp.model, run_budget=inp.budget
        ) as beat:
            return await self._generate(inp, beat.state)

    async def _generate(self, inp: GenerateQueriesInput, carried: Carried) -> GenerateQueriesOutput:
        price = pricing.lookup(inp.model, inp.pricing)
        client = self.llm_client()
        info = activity.info()
        messages: list[anthropic.types.MessageParam] = [
            {"role": "user", "content": prompt(inp.topic, inp.count)}
        ]
        problem = ""
        for ask in range(inp.max_reasks + 1):
            chars = budget.token_chars(SYSTEM) + sum(
                budget.token_chars(str(m["content"])) for m in messages
            )
            reserve = budget.reserve_usd(inp.max_tokens, budget.estimate_tokens(chars), price)
            ledger, key = await reserve_request(inp.budget, carried, reserve, ask)
            try:
                reply = await client.messages.create(
                    model=inp.model,
                    max_tokens=inp.max_tokens,
                    system=SYSTEM,
                    messages=messages,
                    extra_headers={
                        llm.REQUEST_KEY_HEADER: f"{info.workflow_id}/{info.activity_id}/ask{ask}"
                    },
                )
            except anthropic.APIStatusError:
                # An error answer bills nothing; a lost one keeps its reservation.
                await settle_request(carried, ledger, key, 0.0)
                raise
            usage = llm.usage_of(reply.usage)
            cost = pricing.cost_usd(usage, price)
            await settle_request(carried, ledger, key, cost)
            carried.calls += 1
            self.metrics.record_llm(self.labels, inp.model, usage, cost)
            # Anything that fails from here on fails a paid reply: counted, not lost.
            with self.unused_if_raised(carried, inp.model, key, cost):
                refusal = llm.refusal_of(reply)
                if refusal is not None:
                    step = "to write the search queries"
                    raise self.refused(carried, inp.model, key, cost, step, refusal)
                try:
                    queries = parse_queries(llm.text_of(reply), inp.count)
                except ValueError as err:
                    # Paid for and of no use: spend that produced nothing.
                    carried.count_failed(key, cost)
                    self.metrics.record_retry_cost(self.labels, inp.model, cost)
                    if stops.is_cut_short(reply.stop_reason):
                        # A re-ask has the same room: it would be cut, and paid for, again.
                        raise ApplicationError(
                            stops.cut_queries_message(inp.max_tokens),
                            FailureDetailsFactory(carried)(),
                            type=errors.MISCONFIGURED,
                            non_retryable=True,
                        ) from None
                    problem = str(err)
                    activity.logger.warning("unparsable query list (ask %d): %s", ask, problem)
                    # A fresh, stricter prompt rather than the conversation so far:
                    # cheaper (the broken answer is not resent) and just as clear.
                    messages = [
                        {"role": "user", "content": reask_prompt(inp.topic, inp.count, problem)}
                    ]
                    continue
                return GenerateQueriesOutput(
                    queries=queries,
                    llm=LlmCall(
                        model=inp.model,
                        usage=usage,
                        cost_usd=cost,
                        failed_cost_usd=carried.failed_cost_usd,
                        calls=carried.calls,
                    ),
                    attempt=info.attempt,
                    reasks=ask,
                )
        raise ApplicationError(
            f"model output stayed invalid after {inp.max_reasks} re-asks: {problem}",
            FailureDetailsFactory(carried)(),
            type=errors.INVALID_MODEL_OUTPUT,
            non_retryable=True,
        )
