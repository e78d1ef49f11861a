"""Scenario files: YAML -> validated, typed configuration.

Every default of a run lives in the models below and nowhere else. A mistake
in a file is reported as one readable message per problem, naming the
field's path and what was expected -- never a traceback.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .clearing import ClearingMethod
from .constants import SOLVER_TIME_LIMIT_S
from .messages import Direction

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SolverConfig(_Strict):
    method: ClearingMethod = ClearingMethod.AUTO
    time_limit_s: PositiveFloat = SOLVER_TIME_LIMIT_S
    mip_gap: Annotated[float, Field(ge=0, le=1)] = 1e-3


class SettlementConfig(_Strict):
    penalty_factor: NonNegFloat = 1.5
    """Shortfall penalty price = factor x the market's price cap, unless the request names one."""
    gap_rule: Literal["no_delivery", "award"] = "no_delivery"
    """Missing meter data: 'no_delivery' counts nothing delivered (the seller carries the risk);
    'award' assumes the award was delivered (the buyer carries it)."""
    wait_for_meter_hours: PositiveFloat = 72.0
    """After this long past delivery without meter data, settle with the gap rule."""


class FeederConfig(_Strict):
    limit_kw: PositiveFloat


class MarketSchedule(_Strict):
    """A buyer opening one market per day on a fixed daily timetable."""

    product: str
    location: str
    direction: Direction = Direction.DOWN
    first_day: Annotated[int, Field(ge=0)] = 0
    count: Annotated[int, Field(ge=1)] = 1
    every_days: Annotated[int, Field(ge=1)] = 1
    request_time: time = time(10, 0)
    gate_close_time: time = time(11, 0)
    delivery_day_offset: Annotated[int, Field(ge=0)] = 1
    delivery_start_time: time = time(17, 0)
    interval_minutes: Annotated[int, Field(gt=0, le=1440)] = 60
    need_kw: list[NonNegFloat] = Field(min_length=1)
    price_cap: PositiveFloat = 3.0
    penalty_price: NonNegFloat | None = None
    params: dict[str, str | float | int | bool] = Field(default_factory=dict)
    """Product terms passed in the market request (e.g. a BL baseline method, CL pricing)."""


class CongestionConfig(_Strict):
    """A DSO that forecasts its feeders each day and buys flexibility where the forecast exceeds the limit."""

    product: str = "SRP"
    feeders: list[str] = Field(default_factory=list)
    """Feeders watched (empty = all)."""
    threshold: Annotated[float, Field(gt=0, le=2)] = 1.0
    """Congestion when the forecast exceeds threshold x the feeder limit."""
    request_time: time = time(10, 0)
    gate_close_time: time = time(11, 0)
    interval_minutes: Annotated[int, Field(gt=0, le=1440)] = 60
    price_cap: PositiveFloat = 3.0
    penalty_price: NonNegFloat | None = None
    params: dict[str, str | float | int | bool] = Field(default_factory=dict)
    """Product terms passed in the market request (e.g. a BL baseline method, CL pricing)."""
    activate: bool = False
    """For option products (CRP): watch the feeder during the window and activate the reserve
    when the measured load exceeds threshold x limit."""
    activation_lead_minutes: Annotated[int, Field(ge=0)] = 15
    """Congestion measured now is called for the first interval starting at least this much later."""


class ImbalanceConfig(_Strict):
    """The system imbalance the TSO covers; positive = system short (needs less consumption)."""

    csv: str | None = None
    """CSV with columns timestamp, imbalance_kw; replaces the generated series."""
    sd_kw: NonNegFloat = 300.0
    autocorrelation: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """Per 15 minutes, of the generated AR(1) series."""


class BalancingConfig(_Strict):
    """A TSO opening one regulating-power market per interval for the imbalance it expects."""

    product: str = "mFRR"
    interval_minutes: Annotated[int, Field(gt=0, le=60)] = 15
    request_lead_minutes: Annotated[int, Field(gt=0)] = 60
    gate_close_lead_minutes: Annotated[int, Field(ge=0)] = 45
    price_cap: PositiveFloat = 3.0
    """DKK/kWh (3,000 DKK/MWh)."""
    share: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of the imbalance bought on this platform."""
    min_need_kw: NonNegFloat = 10.0
    params: dict[str, str | float | int | bool] = Field(default_factory=dict)
    imbalance: ImbalanceConfig = ImbalanceConfig()


class BuyerConfig(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    role: Literal["dso", "tso"] = "dso"
    markets: list[MarketSchedule] = Field(default_factory=list)
    """Markets opened on a fixed timetable."""
    congestion: CongestionConfig | None = None
    """DSO only: markets opened when the feeder forecast shows congestion."""
    balancing: BalancingConfig | None = None
    """TSO only: regulating-power markets for the system imbalance."""


class BiddingConfig(_Strict):
    """How an aggregator turns its flexibility forecast into bids.

    'cost': price = what a shed kWh costs the aggregator -- the rebound energy bought
    back at spot, minus the spot energy not bought during the event, plus the
    households' lost comfort -- rising by ``step_markup`` per price step.
    'risk_aware': the same prices plus the expected penalty of non-delivery, on a
    forecast quantile of the flexibility, keeping a margin unsold.
    """

    strategy: Literal["cost", "risk_aware"] = "cost"
    steps: Annotated[int, Field(ge=1, le=20)] = 3
    step_markup: NonNegFloat = 0.25
    """Each further price step costs this fraction more than the previous one."""
    offer_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    """'cost': share of the forecast flexibility offered."""
    comfort_cost_dkk_per_kwh: NonNegFloat = 0.3
    min_price_dkk_per_kwh: NonNegFloat = 0.05
    quantile: Annotated[float, Field(gt=0, lt=0.5)] = 0.2
    """'risk_aware': offer the flexibility exceeded with probability 1 - quantile."""
    forecast_cv: NonNegFloat = 0.15
    """'risk_aware': relative standard deviation assumed for the flexibility forecast."""
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """'risk_aware': share of the quantile kept back against non-delivery."""
    block_last_step: bool = False
    """Offer the most expensive step all-or-nothing (exercises the MILP path)."""


class AggregatorConfig(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    households: dict[str, Annotated[int, Field(ge=1)]] = Field(min_length=1)
    """Number of households per feeder."""
    bidding: BiddingConfig = BiddingConfig()
    forecast_refresh_hours: PositiveFloat = 6.0
    """A flexibility forecast is reused for this long before it is made again."""


class HouseholdsConfig(_Strict):
    """The physical model: one vectorised fleet of every household (flech_sim.households)."""

    dt_minutes: Annotated[int, Field(gt=0, le=60)] = 15
    season: Literal["winter", "summer"] = "winter"
    weather_csv: str | None = None
    """CSV with columns timestamp, outdoor_temp_c, irradiance_w_m2; replaces the generated weather."""
    base_load_csv: str | None = None
    """CSV with a timestamp column and one kW column per load profile; households take the
    profiles in turn (round-robin). Replaces the generated base load."""
    perfect_forecast: bool = False
    """Aggregators forecast with the actual weather and base load (no forecast error)."""
    fleet: dict[str, Any] = Field(default_factory=dict)
    """Overrides of flech_sim.households.FleetSpec: device shares and parameter distributions."""
    record_households: Annotated[int, Field(ge=0)] = 3
    """Households per owner whose indoor temperature is written to household_temperatures."""

    @field_validator("fleet")
    @classmethod
    def _fleet_spec(cls, v: dict[str, Any]) -> dict[str, Any]:
        from .households import FleetSpec

        FleetSpec.from_dict(v)  # raises ValueError naming the bad key or distribution
        return v


class SpotConfig(_Strict):
    mean_eur_mwh: PositiveFloat = 35.0
    csv: str | None = None
    """CSV with columns timestamp, price_dkk_per_kwh; replaces the generated series."""


class DataProviderConfig(_Strict):
    """The DataHub: publishes metered load a day late, with optional noise and gaps."""

    id: str = "datahub"
    delay_days: Annotated[int, Field(ge=1)] = 1
    """Data for day D is published on day D + delay_days (the DataHub: next day)."""
    publish_time: time = time(6, 0)
    household_meters: bool = False
    """Also publish every household's own meter series (large for big fleets)."""
    noise: NonNegFloat = 0.0
    """Relative standard deviation of meter noise."""
    gap_probability: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Chance that a reading is missing (a gap, settled by settlement.gap_rule)."""


class SweepConfig(_Strict):
    """A grid of parameter values and a list of seeds; every combination is one run."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted path into the scenario (list items by index, e.g. 'aggregators.0.bidding.steps') -> values."""
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    """Seeds to run each grid point with; empty = the scenario's own seed."""


class Scenario(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: Annotated[int, Field(ge=0)] = 0
    start: datetime = datetime(2026, 1, 12)
    horizon_hours: PositiveFloat = 72.0
    products: dict[str, str] = Field(default_factory=lambda: {"SRP": "builtin"})
    """Product ID -> implementation: 'builtin', an entry point of group flech_sim.products
    ('entry_point'), or a dotted path 'package.module:Class'."""
    solver: SolverConfig = SolverConfig()
    settlement: SettlementConfig = SettlementConfig()
    coordination: Literal["dso_prevails", "tso_prevails", "none"] = "dso_prevails"
    """What happens when a TSO market would worsen a DSO's congestion (flech_sim.coordination)."""
    feeders: dict[str, FeederConfig] = Field(min_length=1)
    households: HouseholdsConfig = HouseholdsConfig()
    unaggregated: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    """Households per feeder that no aggregator controls (they load the feeder, nothing more)."""
    buyers: list[BuyerConfig] = Field(min_length=1)
    aggregators: list[AggregatorConfig] = Field(min_length=1)
    data_provider: DataProviderConfig = DataProviderConfig()
    spot: SpotConfig = SpotConfig()
    sweep: SweepConfig | None = None
    """Only read by ``flech-sim sweep``; ``flech-sim run`` runs the scenario as written."""

    @field_validator("start")
    @classmethod
    def _naive(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=None) if v.tzinfo else v

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        from .registry import resolve_product  # late import: registry imports product modules

        errors: list[str] = []
        for pid, impl in self.products.items():
            try:
                resolve_product(pid, impl)
            except LookupError as exc:
                errors.append(f"products.{pid}: {exc}")
        ids = [b.id for b in self.buyers] + [a.id for a in self.aggregators] + [self.data_provider.id]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            errors.append(f"participant IDs must be unique; repeated: {dup}")
        for i, b in enumerate(self.buyers):
            if b.congestion is not None:
                if b.role != "dso":
                    errors.append(f"buyers.{i}.congestion: only a dso watches feeders")
                if b.congestion.product not in self.products:
                    errors.append(f"buyers.{i}.congestion.product: unknown product ID {b.congestion.product!r}")
                for f in b.congestion.feeders:
                    if f not in self.feeders:
                        errors.append(f"buyers.{i}.congestion.feeders: unknown feeder {f!r}")
            if b.balancing is not None:
                if b.role != "tso":
                    errors.append(f"buyers.{i}.balancing: only a tso buys regulating power")
                if b.balancing.product not in self.products:
                    errors.append(f"buyers.{i}.balancing.product: unknown product ID {b.balancing.product!r}")
            for j, m in enumerate(b.markets):
                where = f"buyers.{i}.markets.{j}"
                if m.product not in self.products:
                    errors.append(f"{where}.product: unknown product ID {m.product!r}; "
                                  f"the scenario's products are {sorted(self.products)}")
                if m.location not in self.feeders:
                    errors.append(f"{where}.location: unknown feeder {m.location!r}; known: {sorted(self.feeders)}")
                if _minutes(m.gate_close_time) <= _minutes(m.request_time):
                    errors.append(f"{where}.gate_close_time: must be after request_time")
                if m.delivery_day_offset == 0 and _minutes(m.delivery_start_time) < _minutes(m.gate_close_time):
                    errors.append(f"{where}.delivery_start_time: must not be before gate_close_time on the same day")
        for i, a in enumerate(self.aggregators):
            for f in a.households:
                if f not in self.feeders:
                    errors.append(f"aggregators.{i}.households.{f}: unknown feeder; known: {sorted(self.feeders)}")
        for f in self.unaggregated:
            if f not in self.feeders:
                errors.append(f"unaggregated.{f}: unknown feeder; known: {sorted(self.feeders)}")
        if 1440 % self.households.dt_minutes:
            errors.append("households.dt_minutes: must divide a day (1440 minutes)")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def horizon_minutes(self) -> int:
        return int(round(self.horizon_hours * 60))

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """SHA-256 of the validated scenario (defaults filled in), for the manifest."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


class ScenarioError(Exception):
    """A scenario could not be loaded; the text lists every problem found."""


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s) in the scenario"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see scenarios/default.yaml for every key)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "value_error") or isinstance(got, dict | list) else f" (got {got!r})"
        if err["type"] == "value_error" and loc == "<top level>":
            for part in msg.split("; "):
                lines.append(f"  - {part}")
        else:
            lines.append(f"  - {loc}: {msg}{shown}")
    return "\n".join(lines)


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a scenario file, not yet validated; ScenarioError if unreadable."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping of scenario keys at the top level")
    return raw


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file; raise :class:`ScenarioError` with a readable text."""
    return scenario_from_dict(read_scenario_file(path) | (overrides or {}), source=str(path))


def scenario_from_dict(raw: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, source)) from None
