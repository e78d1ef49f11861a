"""Household and DER physics for flech_sim: weather, base load, parameter draws and the fleet.

Pure numpy, no simulation clock or messages: aggregators call `HouseholdFleet.forecast`
to plan and `HouseholdFleet.step` once per interval to deliver.
"""

from .control import Control, Forecast, StepResult, group_sum
from .ev import EvSchedule, EvStep
from .fleet import HouseholdFleet
from .flex import DeviceFlex, allocate, window_flex
from .params import FleetSpec, as_seed_sequence, child_seed, draw, validate
from .physics import thermal_step
from .population import HEAT_PUMP, NO_HEAT, PANEL, HouseholdParams, build_params
from .profiles import BaseLoad, BaseLoadSource, CsvBaseLoad
from .weather import Weather, generate_weather, load_weather_csv, perturb_weather

__all__ = [
    "HEAT_PUMP",
    "NO_HEAT",
    "PANEL",
    "BaseLoad",
    "BaseLoadSource",
    "Control",
    "CsvBaseLoad",
    "DeviceFlex",
    "EvSchedule",
    "EvStep",
    "FleetSpec",
    "Forecast",
    "HouseholdFleet",
    "HouseholdParams",
    "StepResult",
    "Weather",
    "allocate",
    "as_seed_sequence",
    "build_params",
    "child_seed",
    "draw",
    "generate_weather",
    "group_sum",
    "load_weather_csv",
    "perturb_weather",
    "thermal_step",
    "validate",
    "window_flex",
]
