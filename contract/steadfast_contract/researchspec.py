"""The ``research`` section: which strategy a run follows, and the deep loop's limits.

One section for the worker configuration and the ResearchAgent spec alike (like
the budget), because everything in it travels in the workflow input: the
strategy, the turn limit and the tool rules are decisions the workflow makes and
must make again identically on replay. Editing it therefore never restarts a
worker (``steadfast_operator.drain.RUN_INPUT_ONLY``); it reaches the next run.

``pipeline`` is the seed's fixed shape (queries, searches, one report) and stays
the default: every agent written before ``deep`` existed keeps its cost and its
two LLM calls. ``deep`` lets Claude drive a tool-use loop (docs/deep-agent.md).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Annotated, Final, Literal

from pydantic import Field, field_validator

from steadfast_contract import models
from steadfast_contract.durations import Duration
from steadfast_contract.specbase import Crd, Rule, SpecModel, Within

_DOMAIN: Final = r"^((\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$"
Domain = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=_DOMAIN,
        description="A host: `example.com` matches it and its subdomains, `*.example.com` "
        "only its subdomains, `[fd00::1]` that IPv6 address; an optional `:port` must "
        "match too.",
    ),
]


def _ipv6_rules(hosts: list[str]) -> list[str]:
    """Refuse a bracketed rule that is not an IPv6 address (the pattern checks only
    its characters)."""
    for host in hosts:
        if host.startswith("["):
            inside = host[1 : host.index("]")]
            try:
                ipaddress.IPv6Address(inside)
            except ValueError:
                raise ValueError(f"{host}: {inside!r} is not an IPv6 address") from None
    return hosts


class FetchPageSpec(SpecModel):
    """The limits of the ``fetch_page`` tool; a page outside them is refused to the model."""

    allow_domains: Annotated[list[Domain], Crd(list_type="set")] = Field(
        default_factory=list,
        max_length=200,
        description="Hosts fetch_page may read. Empty: any host not denied (one with a "
        "non-public address only if allowPrivateHosts names it). Never a link-local "
        "address (instance metadata), whatever the lists say.",
    )
    deny_domains: Annotated[list[Domain], Crd(list_type="set")] = Field(
        default_factory=list,
        max_length=200,
        description="Hosts fetch_page never reads, checked first, on every redirect too.",
    )
    allow_private_hosts: Annotated[list[Domain], Crd(list_type="set")] = Field(
        default_factory=list,
        max_length=200,
        description="Hosts fetch_page may read although they resolve to a non-public "
        "address: loopback, private (10/8, 172.16/12, 192.168/16), shared (100.64/10) or "
        "unique-local (fc00::/7), as services inside the cluster do. Every other host is "
        "refused if any of its addresses is not public, so a page cannot lead the model "
        "into the cluster. The domain lists still apply.",
    )
    max_bytes: int = Field(
        default=models.DEFAULT_FETCH_MAX_BYTES,
        ge=1024,
        le=50_000_000,
        description="A page body longer than this is refused (counted while reading, "
        "whatever Content-Length says).",
    )
    timeout: Annotated[Duration, Within("1s", "10m")] = Field(
        default=timedelta(seconds=models.DEFAULT_FETCH_TIMEOUT_SECONDS),
        description="The longest one fetch may take, redirects and a slow body included.",
    )

    @field_validator("allow_domains", "deny_domains", "allow_private_hosts")
    @classmethod
    def _addresses(cls, hosts: list[str]) -> list[str]:
        return _ipv6_rules(hosts)

    def rules(self) -> models.FetchRules:
        return models.FetchRules(
            allow_domains=list(self.allow_domains),
            deny_domains=list(self.deny_domains),
            max_bytes=self.max_bytes,
            timeout_seconds=self.timeout.total_seconds(),
            allow_private_hosts=list(self.allow_private_hosts),
        )


class ResearchToolsSpec(SpecModel):
    fetch_page: FetchPageSpec = Field(
        default_factory=FetchPageSpec, description="Limits of the fetch_page tool."
    )


class ResearchSpec(SpecModel):
    """How a run researches its topic."""

    crd_rules = (
        Rule(
            "self.continueAsNewAfterTurns == 0 || self.continueAsNewAfterTurns < self.maxTurns",
            "continueAsNewAfterTurns must be below maxTurns (0: when Temporal suggests it)",
        ),
    )

    strategy: Literal["pipeline", "deep"] = Field(
        default="pipeline",
        max_length=16,
        description="pipeline: the fixed steps (queries, searches, one report; 2 LLM calls). "
        "deep: Claude drives a tool-use loop (web_search, fetch_page, record_finding), one "
        "durable activity per turn and per tool call, until it writes a cited report.",
    )
    max_turns: int = Field(
        default=models.DEFAULT_MAX_TURNS,
        ge=1,
        le=200,
        description="deep: LLM turns at most; no tool runs after the last one, which is "
        "asked in words for the report (the tools stay offered so it reads the conversation "
        "from the prompt cache) and asked again without tools if it calls one anyway.",
    )
    continue_as_new_after_turns: int = Field(
        default=0,
        ge=0,
        le=199,
        description="deep: continue the workflow as new after this many turns (at a turn "
        "boundary, carrying a compact state); 0: only when Temporal suggests it.",
    )
    tools: ResearchToolsSpec = Field(
        default_factory=ResearchToolsSpec, description="deep: the tools' limits."
    )
