"""The building blocks of the ResearchAgent spec, and the sections the worker shares.

:mod:`.spec` assembles the whole ``spec`` from these. They live apart because the
worker configuration (:mod:`.config`) reuses the same sections (prices, budget,
retry policies and the model's bounds) rather than describing them a second
time, and because :mod:`.crdschema` reads the markers (:class:`Rule`,
:class:`Crd`) that carry what pydantic does not know: CEL rules, list types and
the defaults the CRD shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

from steadfast_contract import models, pricing
from steadfast_contract.durations import Duration, parse_duration


@dataclass(frozen=True)
class Rule:
    """A CEL rule (``x-kubernetes-validations``) the API server checks."""

    rule: str
    message: str
    field_path: str = ""


@dataclass(frozen=True, eq=False)
class Crd:
    """What the CRD says about a field beyond its type, bounds, pattern and default.

    Given as ``Annotated`` metadata; pydantic ignores it, :mod:`.crdschema` reads it.
    """

    rules: tuple[Rule, ...] = ()
    list_type: str = ""
    """``x-kubernetes-list-type`` of an array."""
    unset: str = ""
    """Appended to the description when the field has no default."""
    shown: BaseModel | None = None
    """The defaults the CRD shows for a section, when they are not the model's own."""


@dataclass(frozen=True, eq=False)
class Within:
    """The bounds of a :data:`Duration` field, said once: ``Annotated[Duration,
    Within("1s", "10m")]`` gives the CRD a CEL rule for each bound (:meth:`crd`, read by
    :mod:`.crdschema`) and the model the same check, so the two cannot disagree.
    ``high_note`` is said in brackets after ``high`` (``90 days``)."""

    low: str
    high: str = ""
    high_note: str = ""

    def _at_most(self) -> str:
        return f"must be at most {self.high}" + (f" ({self.high_note})" if self.high_note else "")

    def crd(self) -> Crd:
        rules = [Rule(f"duration(self) >= duration('{self.low}')", f"must be at least {self.low}")]
        if self.high:
            rules.append(Rule(f"duration(self) <= duration('{self.high}')", self._at_most()))
        return Crd(rules=tuple(rules))

    def _check(self, value: timedelta) -> timedelta:
        if value < parse_duration(self.low):
            raise ValueError(f"must be at least {self.low}")
        if self.high and value > parse_duration(self.high):
            raise ValueError(self._at_most())
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))


class SpecModel(BaseModel):
    """Base of every section: camelCase names, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    crd_rules: ClassVar[tuple[Rule, ...]] = ()
    """CEL rules on the section as a whole."""


# Character classes are spelled out: ``\s`` means ``[\t\n\f\r ]`` to the API server (Go)
# but all Unicode whitespace to pydantic (Rust), and ``\p{..}`` means the same to both.
# A mail header must not hold a control character (``\n``, ``\r``, ``\v``, NEL...) nor a
# Unicode line or paragraph separator: each one can end the header and start another.
ONE_LINE_PATTERN: Final = r"^[^\p{Cc}\p{Zl}\p{Zp}]*$"
ADDRESS_PATTERN: Final = r"^[^@\p{Cc}\p{Z}]+@[^@\p{Cc}\p{Z}]+$"
EmailAddress = Annotated[
    str,
    Field(
        max_length=254,
        pattern=ADDRESS_PATTERN,
        description="An email address (no spaces, control characters or line breaks).",
    ),
]
Sender = Annotated[str, Field(max_length=254, pattern=r"^$|" + ADDRESS_PATTERN)]
"""The sender of the review email; empty means the default."""


ModelName = Annotated[str, Field(min_length=1, max_length=100)]
MaxTokens = Annotated[int, Field(ge=1, le=128_000)]
ContextTokens = Annotated[int, Field(ge=4_000, le=2_000_000)]
"""A model's context window in tokens (``model.contextTokens``)."""
ConcurrentActivities = Annotated[int, Field(ge=1, le=1000)]
DEFAULT_MAX_CONCURRENT_ACTIVITIES: Final = 20
PricePerMTok = Annotated[float, Field(ge=0, le=10000)]


def _per_mtok(tokens: str) -> str:
    return f"USD per million {tokens} tokens."


class PricingSpec(SpecModel):
    """USD per million tokens; overrides the built-in table for the model."""

    input_per_m_tok: PricePerMTok = Field(alias="inputPerMTok", description=_per_mtok("input"))
    output_per_m_tok: PricePerMTok = Field(alias="outputPerMTok", description=_per_mtok("output"))
    cache_read_per_m_tok: PricePerMTok = Field(
        default=0.0,
        alias="cacheReadPerMTok",
        description=_per_mtok("cache-read") + " 0 means a tenth of the input price.",
    )
    cache_write_per_m_tok: PricePerMTok = Field(
        default=0.0,
        alias="cacheWritePerMTok",
        description=_per_mtok("cache-write (5-minute)") + " 0 means 1.25 times the input price.",
    )
    cache_write_1h_per_m_tok: PricePerMTok = Field(
        default=0.0,
        alias="cacheWrite1hPerMTok",
        description=_per_mtok("cache-write (1-hour)") + " 0 means twice the input price.",
    )

    def to_pricing(self) -> models.Pricing:
        """The rates a run records in its input. A cache rate left at 0 is derived from
        the input price as Anthropic prices the cache: a deep run marks cache
        breakpoints whether or not the override names cache rates, and cache tokens
        counted at $0 would let a run and its day spend past their budgets."""
        given = self.input_per_m_tok
        return models.Pricing(
            given,
            self.output_per_m_tok,
            self.cache_read_per_m_tok or given * pricing.CACHE_READ_FACTOR,
            self.cache_write_per_m_tok or given * pricing.FIVE_MINUTE_WRITE_FACTOR,
            self.cache_write_1h_per_m_tok,
        )


class RetryPolicy(SpecModel):
    """A Temporal retry policy; unset fields take the activity class's defaults."""

    crd_rules = (
        Rule(
            "!has(self.maximumInterval) || "
            "duration(self.maximumInterval) >= duration(self.initialInterval)",
            "maximumInterval must be at least initialInterval",
            ".maximumInterval",
        ),
    )

    initial_interval: Duration | None = Field(
        default=None, description="Wait before the first retry."
    )
    backoff_coefficient: float | None = Field(
        default=None,
        ge=1.0,
        le=100.0,
        description="Factor by which the wait grows after each attempt.",
    )
    maximum_interval: Annotated[
        Duration | None, Crd(unset=" Unset means Temporal's default of 100 x initialInterval.")
    ] = Field(default=None, description="Longest wait between attempts.")
    maximum_attempts: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Attempts in all, the first included; 0 means unlimited.",
    )

    @classmethod
    def of(cls, spec: models.RetryPolicySpec) -> RetryPolicy:
        """Every field set, from a policy as it travels in workflow input."""
        interval = spec.maximum_interval_seconds
        return cls(
            initial_interval=timedelta(seconds=spec.initial_interval_seconds),
            backoff_coefficient=spec.backoff_coefficient,
            maximum_interval=None if interval is None else timedelta(seconds=interval),
            maximum_attempts=spec.maximum_attempts,
        )

    def over(self, base: models.RetryPolicySpec) -> models.RetryPolicySpec:
        """This policy's fields layered over ``base``."""
        initial, maximum = self.initial_interval, self.maximum_interval
        spec = models.RetryPolicySpec(
            initial_interval_seconds=(
                base.initial_interval_seconds if initial is None else initial.total_seconds()
            ),
            backoff_coefficient=(
                base.backoff_coefficient
                if self.backoff_coefficient is None
                else self.backoff_coefficient
            ),
            maximum_interval_seconds=(
                base.maximum_interval_seconds if maximum is None else maximum.total_seconds()
            ),
            maximum_attempts=(
                base.maximum_attempts if self.maximum_attempts is None else self.maximum_attempts
            ),
        )
        if (
            spec.maximum_interval_seconds is not None
            and spec.maximum_interval_seconds < spec.initial_interval_seconds
        ):
            raise ValueError("maximumInterval must be at least initialInterval")
        return spec


_SEED: Final = models.RetryPolicies()


def _retry(what: str) -> Any:
    return Field(
        default_factory=RetryPolicy,
        description=f"Retry policy of {what} activities. Unset fields take the defaults shown.",
    )


class RetryPoliciesSpec(SpecModel):
    """One policy per activity class, layered over :class:`models.RetryPolicies`."""

    llm: Annotated[RetryPolicy, Crd(shown=RetryPolicy.of(_SEED.llm))] = _retry("LLM")
    search: Annotated[RetryPolicy, Crd(shown=RetryPolicy.of(_SEED.search))] = _retry("web search")
    database: Annotated[RetryPolicy, Crd(shown=RetryPolicy.of(_SEED.database))] = _retry("database")
    email: Annotated[RetryPolicy, Crd(shown=RetryPolicy.of(_SEED.email))] = _retry(
        "email (at most once by default)"
    )

    def resolve(self) -> models.RetryPolicies:
        """Overrides layered over the seed's default patterns."""
        return models.RetryPolicies(
            llm=self.llm.over(_SEED.llm),
            search=self.search.over(_SEED.search),
            database=self.database.over(_SEED.database),
            email=self.email.over(_SEED.email),
        )

    @model_validator(mode="after")
    def _consistent(self) -> RetryPoliciesSpec:
        for name in ("llm", "search", "database", "email"):
            try:
                getattr(self, name).over(getattr(_SEED, name))
            except ValueError as err:
                # Name the activity class: the defaults it layers over differ.
                raise ValueError(f"{name}: {err}") from None
        return self


class BudgetSpec(SpecModel):
    crd_rules = (
        Rule("self.maxUSDPerRun <= self.maxUSDPerDay", "maxUSDPerRun cannot exceed maxUSDPerDay"),
    )

    max_usd_per_run: float = Field(
        default=models.DEFAULT_MAX_USD_PER_RUN,
        ge=0.0001,
        le=100000,
        alias="maxUSDPerRun",
        description="A run pauses (phase AwaitingBudget) before a call that could exceed this.",
    )
    max_usd_per_day: float = Field(
        default=models.DEFAULT_MAX_USD_PER_DAY,
        ge=0.0001,
        le=10000000,
        alias="maxUSDPerDay",
        description="The agent's spend per UTC day: every LLM call reserves its worst case "
        "from the day's ledger first; a call that does not fit pauses its run.",
    )
    pause_timeout: Duration = Field(
        default=timedelta(seconds=models.DEFAULT_BUDGET_PAUSE_SECONDS),
        description="How long a run whose next call does not fit a budget waits in phase "
        "AwaitingBudget for a raise (`steadfast budget`, an edit of maxUSDPerRun or "
        "maxUSDPerDay) or the next UTC day, before it ends BudgetExhausted; 0s ends it at once.",
    )
