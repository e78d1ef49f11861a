"""Scenario files: YAML -> validated, typed configuration.

Every default of a run lives in the models below and nowhere else. A mistake
in a file is reported as one readable message per problem, naming the
field's path and what was expected -- never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .clearing import ClearingMethod
from .constants import SOLVER_TIME_LIMIT_S
from .messages import Direction
from .settlement import Rule

# -- bounds -------------------------------------------------------------------------
# Every number of the schema is bounded: a value outside these is a typo or an attack, and
# either would overflow, hang or exhaust memory long before it produced a meaningful run.
# Floats must be finite everywhere (``allow_inf_nan=False`` below).
MAX_KW = 1e6
"""Any power in kW (a need, a feeder limit, an imbalance): 1 GW is far above a distribution feeder."""
MAX_PRICE_DKK_PER_KWH = 100.0
"""Any price or cap in DKK/kWh (100 DKK/kWh = 13,400 EUR/MWh, above every European market cap)."""
MAX_HORIZON_HOURS = 2 * 366 * 24.0
MIN_HORIZON_HOURS = 0.25
"""At least one 15-minute step, so the horizon never rounds to zero minutes."""
START_MIN, START_MAX = datetime(1970, 1, 1), datetime(2200, 1, 1)
"""Start of the simulated time (timestamps are seconds since 1970 and pandas' range ends in 2262)."""
MAX_HOUSEHOLDS = 1_000_000
"""Households in one scenario in total (the vectorised fleet holds several arrays per household)."""
MAX_DAYS = 2 * 366
"""Day offsets, counts and spacings of market timetables."""
MAX_INTERVALS = 1440
"""Intervals of one market (one minute each over a whole day)."""
MAX_LIST = 10_000
"""Items of any other list (participants, sweep values, seeds)."""
MAX_TEXT = 10_000
MAX_SEED = 2**63 - 1
MAX_PARAM_NUMBER = 1e9
"""A number among a market's product terms (``params``); the same bound as the messages carrying them."""
SCENARIO_MAX_BYTES = 1 << 20
"""A scenario file larger than 1 MiB is refused before it is parsed."""
YAML_MAX_DEPTH = 50
YAML_MAX_NODES = 200_000
"""Nodes of the YAML document with every alias expanded (an alias bomb expands to billions)."""
CSV_MAX_BYTES = 512 << 20

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Participant IDs, feeder names and the scenario name: letters, digits, '_', '.', '-', starting with a
letter or digit (so never '', '..' or a path), at most 64 characters."""
PRODUCT_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"
RESERVED_IDS = ("flech", "unaggregated")
"""Participant IDs the platform uses itself (the platform's sender ID, the owner of unaggregated homes)."""
RESERVED_PRODUCT_IDS = ("METER",)
"""Product IDs the platform uses itself (the meter-data service is routed like a product)."""

SafeId = Annotated[str, Field(pattern=ID_PATTERN)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Kw = Annotated[float, Field(ge=0, le=MAX_KW)]
PositiveKw = Annotated[float, Field(gt=0, le=MAX_KW)]
Price = Annotated[float, Field(gt=0, le=MAX_PRICE_DKK_PER_KWH)]
NonNegPrice = Annotated[float, Field(ge=0, le=MAX_PRICE_DKK_PER_KWH)]
Days = Annotated[int, Field(ge=0, le=MAX_DAYS)]
DayMinutes = Annotated[int, Field(ge=0, le=1440)]


def _check_params(v: dict[str, Any]) -> dict[str, Any]:
    """Product terms: text (<= 200 characters), a finite number or true/false; one message naming the key."""
    for key, value in v.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value) and abs(value) <= MAX_PARAM_NUMBER:
            continue
        if isinstance(value, str) and len(value) <= 200:
            continue
        raise ValueError(
            f"{key}: must be text (at most 200 characters), a finite number of magnitude at most "
            f"{MAX_PARAM_NUMBER:g} or true/false"
        )
    return v


Params = Annotated[dict[Annotated[str, Field(max_length=64)], Any], Field(max_length=64), AfterValidator(_check_params)]


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default; no float is inf or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)


class SolverConfig(_Strict):
    method: ClearingMethod = ClearingMethod.AUTO
    """Clearing path: 'auto' picks the fastest exact method for the market; the others force one."""
    time_limit_s: Annotated[float, Field(gt=0, le=3600)] = SOLVER_TIME_LIMIT_S
    """[s] Wall-clock limit per clearing solve (HiGHS)."""
    mip_gap: Annotated[float, Field(ge=0, le=1)] = 1e-3
    """Relative MIP gap at which a block-bid clearing stops."""


class ImbalancePriceConfig(_Strict):
    """The imbalance price that settles mFRR deviations under the 'imbalance' rule (flech_sim.imbalance_price)."""

    premium_eur_mwh: Annotated[float, Field(ge=0, le=1000)] = 5.0
    """[EUR/MWh] Mean premium of the imbalance price over spot (above spot when the system is short,
    below when long); Energinet: about 42 early 2023, 15.9 late 2023, 3.4 early 2024. Sellers are
    told it as the expected cost of a kWh of deviation, also when a CSV gives the prices."""
    csv: str | None = None
    """CSV with columns timestamp, price_dkk_per_kwh (the imbalance price); replaces the generated series."""


class SettlementConfig(_Strict):
    """How delivery is settled. Each product settles by a named rule (``rules``; README, "Settlement rules"):
    'delivered_plus_penalty', 'award_minus_penalty' or 'imbalance'. Money is conserved: the buyer pays the
    payments and receives the penalties; under 'imbalance' the deviation amount goes to the TSO, the
    imbalance settlement's counterparty, which is the mFRR market's buyer."""

    penalty_factor: Annotated[float, Field(ge=0, le=100)] = 1.5
    """[x price cap] Shortfall penalty price = factor x the market's price cap, unless the request names one
    (not under the 'imbalance' rule, where only a penalty the request names is charged)."""
    gap_rule: Literal["no_delivery", "award"] = "no_delivery"
    """Missing meter data: 'no_delivery' counts nothing delivered (the seller carries the risk);
    'award' assumes the award was delivered (the buyer carries it)."""
    wait_for_meter_hours: Annotated[float, Field(gt=0, le=MAX_DAYS * 24)] = 72.0
    """[h] After this long past delivery without meter data, settle with the gap rule."""
    rules: dict[Annotated[str, Field(pattern=PRODUCT_ID_PATTERN)], Rule] = Field(default_factory=dict, max_length=64)
    """Product ID -> settlement rule: 'delivered_plus_penalty' (delivered energy paid, shortfall penalised;
    default of SRP, BL, CRP), 'award_minus_penalty' (award paid in full, shortfall penalised; CL's only rule)
    or 'imbalance' (delivered energy paid, deviation settled at the imbalance price; mFRR's default).
    A product not named settles by its default (README: settlement rules)."""
    imbalance_price: ImbalancePriceConfig = ImbalancePriceConfig()
    """The imbalance price series of the 'imbalance' rule."""


class FeederConfig(_Strict):
    limit_kw: PositiveKw
    """[kW] Thermal limit of the feeder; load above it is congestion (and overload in the KPIs)."""


class MarketSchedule(_Strict):
    """A buyer opening one market per day on a fixed daily timetable."""

    product: str
    """Product ID of the markets opened (a key of the scenario's `products`)."""
    location: str
    """Feeder the markets are for (a key of `feeders`)."""
    direction: Direction = Direction.DOWN
    """'down' = consume less, 'up' = consume more."""
    first_day: Days = 0
    """[day] Day of the horizon (0 = the start day) on which the first market request is sent."""
    count: Annotated[int, Field(ge=1, le=MAX_DAYS)] = 1
    """Number of markets opened."""
    every_days: Annotated[int, Field(ge=1, le=MAX_DAYS)] = 1
    """[days] Days between consecutive market requests."""
    request_time: time = time(10, 0)
    """[HH:MM] Time of day the buyer sends the market request (the market opens)."""
    gate_close_time: time = time(11, 0)
    """[HH:MM] Time of day bidding closes and the market clears; after request_time."""
    delivery_day_offset: Annotated[int, Field(ge=0, le=30)] = 1
    """[days] Delivery starts this many days after the request day (1 = D+1)."""
    delivery_start_time: time = time(17, 0)
    """[HH:MM] Time of day delivery starts."""
    interval_minutes: Annotated[int, Field(gt=0, le=1440)] = 60
    """[min] Length of one delivery interval; the window is len(need_kw) intervals."""
    need_kw: list[Kw] = Field(min_length=1, max_length=MAX_INTERVALS)
    """[kW] The buyer's need per delivery interval (one value per interval)."""
    price_cap: Price = 3.0
    """[DKK/kWh] Highest price the buyer pays; unmet need is costed at it in clearing."""
    penalty_price: NonNegPrice | None = None
    """[DKK/kWh] Shortfall penalty price; empty = settlement.penalty_factor x price_cap."""
    params: Params = Field(default_factory=dict)
    """Product terms passed in the market request (e.g. a BL baseline method, CL pricing)."""


class CongestionConfig(_Strict):
    """A DSO that forecasts its feeders each day and buys flexibility where the forecast exceeds the limit."""

    product: str = "SRP"
    """Product ID bought against forecast congestion (SRP, CRP, BL or CL)."""
    feeders: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    """Feeders watched (empty = all)."""
    threshold: Annotated[float, Field(gt=0, le=2)] = 1.0
    """[x limit] Congestion when the forecast exceeds threshold x the feeder limit."""
    request_time: time = time(10, 0)
    """[HH:MM] Time of day the feeder forecast is made and markets requested (for D+1)."""
    gate_close_time: time = time(11, 0)
    """[HH:MM] Time of day bidding closes and the markets clear."""
    interval_minutes: Annotated[int, Field(gt=0, le=1440)] = 60
    """[min] Length of one delivery interval."""
    price_cap: Price = 3.0
    """[DKK/kWh] Highest price the DSO pays."""
    penalty_price: NonNegPrice | None = None
    """[DKK/kWh] Shortfall penalty price; empty = settlement.penalty_factor x price_cap."""
    params: Params = Field(default_factory=dict)
    """Product terms passed in the market request (e.g. a BL baseline method, CL pricing)."""
    activate: bool = False
    """For option products (CRP): watch the feeder during the window and activate the reserve
    when the measured load exceeds threshold x limit."""
    activation_lead_minutes: DayMinutes = 15
    """[min] Congestion measured now is called for the first interval starting at least this much later."""


class ImbalanceConfig(_Strict):
    """The system imbalance the TSO covers; positive = system short (needs less consumption)."""

    csv: str | None = None
    """CSV with columns timestamp, imbalance_kw; replaces the generated series."""
    sd_kw: Kw = 300.0
    """[kW] Standard deviation of the generated imbalance series."""
    autocorrelation: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """Per 15 minutes, of the generated AR(1) series."""


class BalancingConfig(_Strict):
    """A TSO opening one regulating-power market per interval for the imbalance it expects."""

    product: str = "mFRR"
    """Product ID of the regulating-power markets."""
    interval_minutes: Annotated[int, Field(gt=0, le=60)] = 15
    """[min] Length of one market's delivery interval (mFRR: 15)."""
    request_lead_minutes: Annotated[int, Field(gt=0, le=1440)] = 60
    """[min] A market is requested this long before its interval starts."""
    gate_close_lead_minutes: DayMinutes = 45
    """[min] Bidding closes this long before the interval starts."""
    price_cap: Price = 3.0
    """[DKK/kWh] Highest price the TSO pays (3.0 = 3,000 DKK/MWh)."""
    share: Annotated[float, Field(gt=0, le=1)] = 1.0
    """[fraction] Share of the imbalance bought on this platform."""
    min_need_kw: Kw = 10.0
    """[kW] No market is opened for an expected imbalance smaller than this."""
    params: Params = Field(default_factory=dict)
    """Product terms passed in every market request."""
    imbalance: ImbalanceConfig = ImbalanceConfig()
    """The system imbalance the TSO covers."""


class BuyerConfig(_Strict):
    id: SafeId
    """Participant ID (letters, digits, '_', '.', '-'); unique among all participants."""
    role: Literal["dso", "tso"] = "dso"
    """'dso' (local congestion) or 'tso' (balancing)."""
    markets: list[MarketSchedule] = Field(default_factory=list, max_length=MAX_LIST)
    """Markets opened on a fixed timetable."""
    congestion: CongestionConfig | None = None
    """DSO only: markets opened when the feeder forecast shows congestion."""
    balancing: BalancingConfig | None = None
    """TSO only: regulating-power markets for the system imbalance."""
    external: bool = False
    """Not simulated: its own software takes part through the MQTT broker (`flech-sim serve`; `run` simulates it)."""
    password_file: str | None = Field(None, max_length=300)
    """External only: file (relative to the scenario) holding its broker password; none: one is generated."""


class BiddingConfig(_Strict):
    """How an aggregator turns its flexibility forecast into bids.

    'cost': price = what a shed kWh costs the aggregator -- the rebound energy bought
    back at spot, minus the spot energy not bought during the event, plus the
    households' lost comfort -- rising by ``step_markup`` per price step.
    'risk_aware': the same prices plus the expected penalty of non-delivery, on a
    forecast quantile of the flexibility, keeping a margin unsold.
    'expected_profit': newsvendor -- each price step sells up to the quantity q with
    P(flexibility < q) = margin / (margin + shortfall loss), the flexibility taken as
    normal with relative sd ``forecast_cv``: offers shrink as the penalty rises. Where the
    product settles the whole portfolio load (CL's cap, BL's platform baseline) it also prices
    the load forecast's error in kW (``baseline_cv``, then its own record): all-or-nothing
    offers no larger than the need, only in intervals whose expected profit stays positive.
    """

    strategy: Literal["cost", "risk_aware", "expected_profit"] = "cost"
    """Bidding strategy (see the section text above)."""
    steps: Annotated[int, Field(ge=1, le=20)] = 3
    """Number of price-quantity steps per offered interval."""
    step_markup: Annotated[float, Field(ge=0, le=10)] = 0.25
    """[fraction] Each further price step costs this fraction more than the previous one."""
    offer_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    """[fraction] 'cost': share of the forecast flexibility offered."""
    comfort_cost_dkk_per_kwh: NonNegPrice = 0.3
    """[DKK/kWh] Value the aggregator puts on its households' lost comfort per kWh shed."""
    min_price_dkk_per_kwh: NonNegPrice = 0.05
    """[DKK/kWh] Floor of every bid price."""
    min_price_by_product: dict[str, NonNegPrice] = Field(default_factory=dict, max_length=MAX_LIST)
    """[DKK/kWh] Product ID -> floor replacing min_price_dkk_per_kwh for that product's bids: an FSP's ask
    in a local flexibility market also covers participation costs a marginal mFRR bid does not
    (docs/reference_ranges.md, "DSO prices")."""
    quantile: Annotated[float, Field(gt=0, lt=0.5)] = 0.2
    """'risk_aware': offer the flexibility exceeded with probability 1 - quantile."""
    forecast_cv: Annotated[float, Field(ge=0, le=10)] = 0.15
    """'risk_aware', 'expected_profit': relative standard deviation assumed for the flexibility forecast."""
    baseline_cv: Annotated[float, Field(ge=0, le=1)] = 0.05
    """[fraction] 'expected_profit': relative sd of the portfolio's load forecast (its baseline) assumed until
    its own settlements measure it; priced where the product settles the whole load (CL's cap, BL's platform
    baseline). 0.05: the bundled studies' declared-vs-counterfactual error (mean abs 4 % of the load)."""
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """[fraction] 'risk_aware': share of the quantile kept back against non-delivery."""
    block_last_step: bool = False
    """Offer the most expensive step all-or-nothing (exercises the MILP path)."""


COMFORT_COMPENSATION_DKK_PER_DEGREE_HOUR = 25.0
"""Default price of a degree-hour of comfort breach caused by dispatch, derived (not published): EQUINOX
trial 1 (NGED with Octopus Energy, winter 2022/23) paid about GBP 100 for 22 two-hour heat-pump turn-downs,
about GBP 4.5 an event; a 2-hour turn-down lowers indoor temperature about 1 K (ComfortID field study:
0.8-1.1 K), about 1.5 K h with the recovery, so about GBP 3 = 26 DKK per K h (docs/reference_ranges.md,
``comfort_compensation_per_degree_hour``). That pays for deviations occupants agreed to; a breach of the
band they set is worth at least as much."""


class DispatchConfig(_Strict):
    """How the aggregator's households carry out what it sold (flech_sim.households.Control)."""

    force: bool = False
    """Let dispatch breach the comfort band and the EV deadline to deliver what was ordered (physical power,
    energy and SoC limits still hold): comfort-respecting headroom is used first, the breach only for the
    rest. Off: dispatch keeps every controlled home in its band, including its recovery after release (a
    home is shed no lower than the temperature from which its own heater keeps it in band over the next
    24 h of forecast weather), and undelivered energy is a settlement shortfall (the comfort table still
    records any breach dispatch causes)."""
    comfort_compensation_dkk_per_degree_hour: Annotated[float, Field(ge=0, le=10_000)] = (
        COMFORT_COMPENSATION_DKK_PER_DEGREE_HOUR
    )
    """[DKK/(K h)] Paid by the aggregator to its households per degree-hour outside their comfort band that
    its dispatch caused (table comfort_compensation, one row per aggregator and day); deducted in the
    net_margin_dkk KPI. Default 25: EQUINOX heat-pump trial payments, about GBP 3 per K h (derived; see
    docs/reference_ranges.md)."""


class AggregatorConfig(_Strict):
    id: SafeId
    """Participant ID (letters, digits, '_', '.', '-'); unique among all participants."""
    households: dict[str, Annotated[int, Field(ge=1, le=MAX_HOUSEHOLDS)]] = Field(min_length=1, max_length=MAX_LIST)
    """Number of households per feeder."""
    bidding: BiddingConfig = BiddingConfig()
    """How the aggregator prices and sizes its bids."""
    forecast_refresh_hours: Annotated[float, Field(ge=0.25, le=MAX_DAYS * 24)] = 6.0
    """[h] A flexibility forecast is reused for this long before it is made again."""
    dispatch: DispatchConfig = DispatchConfig()
    """Whether dispatch may breach comfort to deliver, and what a breach costs the aggregator."""
    external: bool = False
    """Not simulated: its own software takes part through the MQTT broker (`flech-sim serve`; `run` simulates it)."""
    password_file: str | None = Field(None, max_length=300)
    """External only: file (relative to the scenario) holding its broker password; none: one is generated."""


class HouseholdsConfig(_Strict):
    """The physical model: one vectorised fleet of every household (flech_sim.households)."""

    dt_minutes: Annotated[int, Field(gt=0, le=60)] = 15
    """[min] Physics time step of the fleet; must divide a day."""
    season: Literal["winter", "summer"] = "winter"
    """Generated weather and load profiles: Danish 'winter' or 'summer'."""
    weather_csv: str | None = None
    """CSV with columns timestamp, outdoor_temp_c, irradiance_w_m2; replaces the generated weather."""
    base_load_csv: str | None = None
    """CSV with a timestamp column and one kW column per load profile; households take the
    profiles in turn (round-robin). Replaces the generated base load."""
    perfect_forecast: bool = False
    """Aggregators forecast with the actual weather and base load (no forecast error)."""
    fleet: dict[str, Any] = Field(default_factory=dict, max_length=MAX_LIST)
    """Overrides of flech_sim.households.FleetSpec: device shares and parameter distributions."""
    record_households: Annotated[int, Field(ge=0, le=10_000)] = 3
    """Households per owner whose indoor temperature is written to household_temperatures, drawn at random
    among its heated homes; each aggregator adds as many again: the first of its homes to be dispatched (from
    the start of that day), so the sample holds dispatched and undispatched homes of both strata."""

    @field_validator("fleet")
    @classmethod
    def _fleet_spec(cls, v: dict[str, Any]) -> dict[str, Any]:
        from .households import FleetSpec

        FleetSpec.from_dict(v)  # raises ValueError naming the bad key or distribution
        return v


class SpotConfig(_Strict):
    mean_eur_mwh: Annotated[float, Field(gt=0, le=10_000)] = 85.0
    """[EUR/MWh] Mean of the generated day-ahead spot price series. Default 85: within DK's daily winter
    averages (79-166 EUR/MWh over Jan 2026) and between the 2024 annual means of its neighbours (SE 36,
    DE 79.6); 35 was a 2015-20 level (docs/reference_ranges.md, "Money and spot prices")."""
    csv: str | None = None
    """CSV with columns timestamp, price_dkk_per_kwh; replaces the generated series."""


class DataProviderConfig(_Strict):
    """The DataHub: publishes metered load a day late, with optional noise and gaps."""

    id: SafeId = "datahub"
    """Participant ID of the data provider."""
    delay_days: Annotated[int, Field(ge=1, le=30)] = 1
    """[days] Data for day D is published on day D + delay_days (the DataHub: next day)."""
    publish_time: time = time(6, 0)
    """[HH:MM] Time of day meter data is published."""
    household_meters: bool = False
    """Also publish every household's own meter series (large for big fleets)."""
    noise: Annotated[float, Field(ge=0, le=10)] = 0.0
    """[fraction] Relative standard deviation of meter noise."""
    gap_probability: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """[probability] Chance that a reading is missing (a gap, settled by settlement.gap_rule)."""


class SweepConfig(_Strict):
    """A grid of parameter values and a list of seeds; every combination is one run."""

    grid: dict[Annotated[str, Field(max_length=200)], Annotated[list[Any], Field(max_length=MAX_LIST)]] = Field(
        default_factory=dict, max_length=64
    )
    """Dotted path into the scenario (list items by index, e.g. 'aggregators.0.bidding.steps') -> values."""
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=list, max_length=MAX_LIST)
    """Seeds to run each grid point with; empty = the scenario's own seed."""


class Scenario(_Strict):
    name: SafeId
    """Scenario name (letters, digits, '_', '.', '-'); names the run directory."""
    description: str = Field("", max_length=MAX_TEXT)
    """Free text, kept in the manifest."""
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    """Random seed: weather, loads, households, imbalance and forecasts all derive from it."""
    start: datetime = datetime(2026, 1, 12)
    """Simulated start (naive local time; a timezone is dropped)."""
    horizon_hours: Annotated[float, Field(ge=MIN_HORIZON_HOURS, le=MAX_HORIZON_HOURS)] = 72.0
    """[h] Length of the simulated run."""
    products: dict[Annotated[str, Field(pattern=PRODUCT_ID_PATTERN)], Annotated[str, Field(max_length=300)]] = Field(
        default_factory=lambda: {"SRP": "builtin"}, max_length=64
    )
    """Product ID -> implementation: 'builtin', an entry point of group flech_sim.products
    ('entry_point'), or a dotted path 'package.module:Class'."""
    solver: SolverConfig = SolverConfig()
    """Clearing solver settings shared by all markets."""
    settlement: SettlementConfig = SettlementConfig()
    """Settlement rules shared by all markets."""
    coordination: Literal["grid_headroom", "dso_prevails", "tso_prevails", "none"] = "grid_headroom"
    """What happens when a TSO market would load a feeder: grid_headroom screens TSO bids (and their
    rebound) against each feeder's forecast headroom in all hours; dso_prevails only protects the DSO's
    market windows; tso_prevails records and allows; none (flech_sim.coordination)."""
    coordination_margin: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """[share] Of each feeder's limit, what grid_headroom keeps free of TSO load: the forecast's error."""
    feeders: dict[SafeId, FeederConfig] = Field(min_length=1, max_length=MAX_LIST)
    """Feeder ID -> feeder; households, markets and limits refer to these IDs."""
    households: HouseholdsConfig = HouseholdsConfig()
    """The physical household fleet."""
    unaggregated: dict[str, Annotated[int, Field(ge=0, le=MAX_HOUSEHOLDS)]] = Field(
        default_factory=dict, max_length=MAX_LIST
    )
    """Households per feeder that no aggregator controls (they load the feeder, nothing more)."""
    buyers: list[BuyerConfig] = Field(min_length=1, max_length=MAX_LIST)
    """DSOs and TSOs that open markets."""
    aggregators: list[AggregatorConfig] = Field(min_length=1, max_length=MAX_LIST)
    """Sellers, each controlling households on one or more feeders."""
    data_provider: DataProviderConfig = DataProviderConfig()
    """The DataHub publishing meter data."""
    spot: SpotConfig = SpotConfig()
    """The day-ahead spot price series (the aggregators' energy cost)."""
    twin: bool = True
    """Also run the no-flexibility twin (same seed and households, buyers' markets withheld) into
    ``<run>/twin/``: the counterfactual of feeder_compare, rebound_events and the twin KPIs (about doubles
    the run time; ``flech-sim run --no-twin`` switches it off too)."""
    sweep: SweepConfig | None = None
    """Only read by ``flech-sim sweep``; ``flech-sim run`` runs the scenario as written."""

    @field_validator("start")
    @classmethod
    def _naive(cls, v: datetime) -> datetime:
        v = v.replace(tzinfo=None) if v.tzinfo else v
        if not START_MIN <= v <= START_MAX:
            raise ValueError(f"must be between {START_MIN:%Y-%m-%d} and {START_MAX:%Y-%m-%d}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        from .registry import resolve_product  # late import: registry imports product modules

        errors: list[str] = []
        for pid, impl in self.products.items():
            if pid.upper() in RESERVED_PRODUCT_IDS:
                errors.append(f"products.{pid}: the product ID {pid!r} is reserved by the platform")
                continue
            try:
                resolve_product(pid, impl, load=False)  # imports nothing the user did not name
            except LookupError as exc:
                errors.append(f"products.{pid}: {exc}")
        named = (
            [(f"buyers.{i}.id", b.id) for i, b in enumerate(self.buyers)]
            + [(f"aggregators.{i}.id", a.id) for i, a in enumerate(self.aggregators)]
            + [("data_provider.id", self.data_provider.id)]
        )
        for where, pid in named:
            if pid.lower() in RESERVED_IDS:
                errors.append(f"{where}: {pid!r} is reserved by the platform (reserved: {list(RESERVED_IDS)})")
        ids = [i for _, i in named]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            errors.append(f"participant IDs must be unique; repeated: {dup}")
        homes = sum(n for a in self.aggregators for n in a.households.values()) + sum(self.unaggregated.values())
        if homes > MAX_HOUSEHOLDS:
            errors.append(f"households: {homes} in total; at most {MAX_HOUSEHOLDS} are supported")
        for where, csv_path, columns in self._csv_inputs():
            problem = check_csv(csv_path, columns)
            if problem:
                errors.append(f"{where}: {problem}")
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
                    errors.append(
                        f"{where}.product: unknown product ID {m.product!r}; "
                        f"the scenario's products are {sorted(self.products)}"
                    )
                if m.location not in self.feeders:
                    errors.append(f"{where}.location: unknown feeder {m.location!r}; known: {sorted(self.feeders)}")
                if _minutes(m.gate_close_time) <= _minutes(m.request_time):
                    errors.append(f"{where}.gate_close_time: must be after request_time")
                if m.delivery_day_offset == 0 and _minutes(m.delivery_start_time) < _minutes(m.gate_close_time):
                    errors.append(f"{where}.delivery_start_time: must not be before gate_close_time on the same day")
        for pid, rule in self.settlement.rules.items():
            if pid not in self.products:
                errors.append(
                    f"settlement.rules.{pid}: unknown product ID; the scenario's products are {sorted(self.products)}"
                )
                continue
            try:
                cls = resolve_product(pid, self.products[pid], load=False)
            except LookupError:
                continue  # reported above
            allowed = getattr(cls, "SETTLEMENT_RULES", None) if cls is not None else None
            if allowed is not None and rule not in allowed:
                errors.append(f"settlement.rules.{pid}: {pid} cannot settle by {rule!r}; its rules are {list(allowed)}")
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

    def _csv_inputs(self) -> list[tuple[str, str, tuple[str, ...] | None]]:
        """(field, path, required value columns; None = any) of every CSV the run would read."""
        out: list[tuple[str, str, tuple[str, ...] | None]] = []
        if self.households.weather_csv:
            out.append(("households.weather_csv", self.households.weather_csv, ("outdoor_temp_c", "irradiance_w_m2")))
        if self.households.base_load_csv:
            out.append(("households.base_load_csv", self.households.base_load_csv, None))
        if self.spot.csv:
            out.append(("spot.csv", self.spot.csv, ("price_dkk_per_kwh",)))
        if self.settlement.imbalance_price.csv:
            out.append(("settlement.imbalance_price.csv", self.settlement.imbalance_price.csv, ("price_dkk_per_kwh",)))
        for i, b in enumerate(self.buyers):
            if b.balancing is not None and b.balancing.imbalance.csv:
                out.append((f"buyers.{i}.balancing.imbalance.csv", b.balancing.imbalance.csv, ("imbalance_kw",)))
        return out

    def load_products(self) -> None:
        """Import every product named by a dotted path or entry point and check it; ScenarioError if one fails.

        This *runs* the code the scenario names (that is how a plug-in is loaded): called when a run
        starts, never by validation.
        """
        from .registry import resolve_product

        errors = []
        for pid, impl in sorted(self.products.items()):
            try:
                resolve_product(pid, impl)
            except LookupError as exc:
                errors.append(f"products.{pid}: {exc}")
        if errors:
            raise ScenarioError("; ".join(errors))

    @property
    def horizon_minutes(self) -> int:
        return round(self.horizon_hours * 60)

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
            msg = "unknown key (check the spelling; see docs/scenario.md for every key)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "value_error") or isinstance(got, dict | list) else f" (got {got!r})"
        if len(shown) > 100:  # a huge value must not flood the message
            shown = shown[:90] + "...)"
        if err["type"] == "value_error" and loc == "<top level>":
            for part in msg.split("; "):
                lines.append(f"  - {part}")
        else:
            lines.append(f"  - {loc}: {msg}{shown}")
    return "\n".join(lines)


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a scenario file, not yet validated; ScenarioError (one line) if unreadable.

    Only a regular file of at most :data:`SCENARIO_MAX_BYTES` is read (never a FIFO, a device or a
    directory, so nothing can hang or exhaust memory here); it must be UTF-8; the YAML loader is
    the safe one, refuses duplicate keys and bounds nesting depth and alias expansion.
    """
    path = Path(path)
    data = _read_bounded(path, SCENARIO_MAX_BYTES, "scenario file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ScenarioError(f"{path}: the file is UTF-16; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})") from None
    try:
        raw = yaml.load(text, Loader=_ScenarioLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ScenarioError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping of scenario keys at the top level")
    return raw


def _read_bounded(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ScenarioError otherwise.

    Opened non-blocking and checked on the open descriptor, so a FIFO neither blocks the open
    nor can be swapped in between a check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot open the {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ScenarioError(f"{path}: is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise ScenarioError(f"{path}: not a regular file (a FIFO, socket or device); cannot be a {what}")
        if st.st_size > max_bytes:
            raise ScenarioError(f"{path}: {st.st_size} bytes; a {what} may have at most {max_bytes}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ScenarioError(f"{path}: larger than {max_bytes} bytes; a {what} may have at most that")
    return data


class _ScenarioLoader(yaml.SafeLoader):
    """The safe loader, stricter: duplicate keys are errors, depth and alias expansion are bounded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"line {mark.line + 1}: nested deeper than {YAML_MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            n = _expanded_size(node, {}, set())
            if n > YAML_MAX_NODES:
                raise yaml.YAMLError(f"{n} values with aliases expanded; at most {YAML_MAX_NODES} (an alias bomb?)")
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unhashable key {key!r}", key_node.start_mark
                ) from None
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (the first value would be silently lost)", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def _expanded_size(node: Any, memo: dict[int, int], active: set[int]) -> int:
    """Nodes in the document with every alias expanded: linear in the composed graph (memoised)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise yaml.YAMLError("a recursive alias (a value containing itself)")
    active.add(key)
    n = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            n += _expanded_size(child, memo, active)
            if n > YAML_MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            n += _expanded_size(k, memo, active) + _expanded_size(v, memo, active)
            if n > YAML_MAX_NODES:
                break
    active.discard(key)
    memo[key] = n
    return n


def check_csv(path: str | Path, columns: tuple[str, ...] | None) -> str | None:
    """Why a CSV input cannot be used (missing, not a regular file, not the expected columns), or None.

    ``columns``: the value columns required besides ``timestamp``; None = at least one, any name.
    """
    import pandas as pd

    path = Path(path)
    try:
        data = _read_bounded(path, CSV_MAX_BYTES, "CSV file")
    except ScenarioError as exc:
        return str(exc)
    try:
        df = pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        return f"{path}: not a readable CSV file: {' '.join(str(exc).split())}"
    wanted = ["timestamp", *(columns or ())]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        return f"{path}: missing column(s) {missing}; found {[str(c) for c in df.columns][:20]}"
    values = list(columns) if columns else [c for c in df.columns if c != "timestamp"]
    if not values:
        return f"{path}: no value columns besides 'timestamp'"
    if df.empty:
        return f"{path}: no rows"
    try:
        pd.to_datetime(df["timestamp"])
    except (ValueError, TypeError, OverflowError) as exc:
        return f"{path}: column timestamp: not date-times: {' '.join(str(exc).split())[:200]}"
    bad = [c for c in values if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        return f"{path}: column(s) {bad} are not numeric"
    return None


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file; raise :class:`ScenarioError` with a readable text."""
    return scenario_from_dict(read_scenario_file(path) | (overrides or {}), source=str(path))


def scenario_from_dict(raw: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, source)) from None
