"""``flech-sim serve SCENARIO.yaml --broker mqtt://127.0.0.1:1883``: a run with external participants.

The scenario's participants marked ``external: true`` are not simulated; their software talks to the
platform through the broker (see docs/mqtt.md). The broker is started separately
(``scripts/start-mosquitto.sh``), which also writes the credentials file this command reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..messages import PLATFORM


def register_cli(sub: Any) -> None:
    s = sub.add_parser("serve", help="run a scenario with external participants over an MQTT broker, in real time")
    s.add_argument("scenario", type=Path, help="scenario YAML file (participants with external: true)")
    s.add_argument("--broker", required=True, help="mqtt://HOST:PORT of the broker (e.g. mqtt://127.0.0.1:1883)")
    s.add_argument(
        "--credentials",
        type=Path,
        required=True,
        help="file of user:password lines with the platform's user 'flech' (start-mosquitto.sh writes it)",
    )
    s.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated minutes per wall minute (60: a simulated minute per second); "
        "0: as fast as the external participants answer (default 60)",
    )
    s.add_argument(
        "--answer-timeout",
        type=float,
        default=5.0,
        help="--speed 0: wall seconds to wait for an answer to a bid request before moving on (default 5)",
    )
    s.add_argument(
        "--wait-online",
        type=float,
        default=30.0,
        help="wall seconds to wait for every external participant to be online before starting (default 30)",
    )
    s.add_argument("--rate", type=float, default=200.0, help="messages a second one participant may send (default 200)")
    s.add_argument("--burst", type=int, default=400, help="messages one participant may send at once (default 400)")
    s.add_argument(
        "--broker-log",
        type=Path,
        help="the broker's log, read for publishes its ACL denied, which are recorded as refused "
        "(default: mosquitto.log beside --credentials, if it is there)",
    )
    s.add_argument("--out", type=Path, help="run directory (default: results/<scenario>/seed<N>-<time>)")
    s.add_argument("--seed", type=int, help="override the scenario's seed")
    s.add_argument("--no-twin", action="store_true", help="do not run the no-flexibility twin")
    s.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from ..cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUN_FAILED, format_summary
    from ..scenario import ScenarioError, load_scenario
    from ..simulation import RunInterrupted, run
    from .broker import external_participants, read_credentials
    from .mqtt import MqttWire
    from .transport import Bridge, RateLimit

    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.no_twin:
        overrides["twin"] = False
    try:
        scenario = load_scenario(args.scenario, overrides)
        scenario.load_products()
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    external = frozenset(external_participants(scenario))
    if not external:
        print(f"error: {args.scenario}: no participant has external: true (use 'flech-sim run')", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        password = read_credentials(args.credentials)[PLATFORM]
        log = args.broker_log or args.credentials.parent / "mosquitto.log"
        wire = MqttWire(
            args.broker,
            password,
            wait_online_s=args.wait_online,
            broker_log=log if args.broker_log or log.exists() else None,
        )
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {args.credentials} / {args.broker}: {exc!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.speed < 0:
        print("error: --speed must be >= 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    bridge = Bridge(
        wire,
        external,
        speed=args.speed,
        answer_timeout_s=args.answer_timeout,
        rate=RateLimit(per_second=args.rate, burst=args.burst),
    )
    print(
        f"serving {scenario.name!r} on {args.broker}: external {sorted(external)}, speed {args.speed:g}",
        file=sys.stderr,
        flush=True,
    )
    try:
        result = run(scenario, args.out, transport=bridge)
    except RunInterrupted as exc:
        partial = getattr(exc, "result", None)
        where = f"; what was recorded is in {partial.out_dir} (marked incomplete)" if partial else ""
        print(f"error: run interrupted by {exc}{where}", file=sys.stderr)
        return 128 + exc.signum
    if result.manifest.get("manifest_written"):
        print(format_summary(result.summary, result.out_dir, result.completed))
        s = bridge.stats
        print(
            f"  broker            {s.received} in, {s.published} out; refused {s.refused_topic} (topic), "
            f"{s.refused_rate} (rate), {s.denied_by_broker} (broker ACL); {s.deadlines_passed} answers not in time"
        )
    if not result.completed:
        first = (result.error or "unknown error").strip().splitlines()[0]
        print(f"error: the run failed: {first}", file=sys.stderr)
        return EXIT_RUN_FAILED
    return EXIT_OK
