"""Messages through a real Mosquitto broker: round-trip latency and throughput (issue 15).

Starts Mosquitto on a free loopback port (scripts/start-mosquitto.sh), a platform in real time
(``Bridge`` + ``MqttWire``, as ``flech-sim serve``) with one SRP market held open, and an external
aggregator client (paho) that

1. sends ``--round-trips`` bids one at a time, each after the previous one's acknowledgement:
   wall time from publishing the bid to receiving its ack (median, p95, max);
2. sends ``--burst`` bids at once and times until every ack is back: bids per second in, and
   messages per second through the broker (each bid and its ack are two messages).

Every bid is a real one (its own bid ID, checked, stored, acknowledged), not a ping.

    PYTHONPATH=. python benchmarks/bench_mqtt.py [--round-trips 500] [--burst 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from flech_sim.bridge import Bridge, RateLimit
from flech_sim.bridge.broker import read_credentials
from flech_sim.bridge.mqtt import MqttWire, no_delay
from flech_sim.messages import PLATFORM, Direction, MarketRequest
from flech_sim.persistor import Persistor
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import build_core

REPO = Path(__file__).resolve().parents[1]
ME = "agg-x"
SCENARIO: dict[str, Any] = {
    "name": "bench_mqtt",
    "horizon_hours": 24,
    "twin": False,
    "feeders": {"feeder-1": {"limit_kw": 400}},
    "buyers": [{"id": "dso-1", "role": "dso"}],
    "aggregators": [{"id": ME, "households": {"feeder-1": 10}, "external": True}],
}


class Client:
    """The external aggregator: publishes bids, notes when each ack arrives."""

    def __init__(self, port: int, password: str) -> None:
        self.acks: dict[str, float] = {}
        self.request: dict[str, Any] | None = None
        self.changed = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ME, clean_session=True, protocol=mqtt.MQTTv311)
        self.c.username_pw_set(ME, password)
        self.c.max_inflight_messages_set(100)
        subscribed = threading.Event()
        self.c.on_connect = lambda cl, *_: (no_delay(cl), cl.subscribe(f"flech/inbox/{ME}", qos=1))
        self.c.on_subscribe = lambda *_: subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        subscribed.wait(10)
        self.c.publish(f"flech/status/{ME}", b"online", qos=1, retain=True).wait_for_publish(5)
        self.n = 0

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        msg = json.loads(message.payload)
        with self.changed:
            if msg["kind"] == "bid_request":
                self.request = msg
            elif msg["kind"] in ("ack", "rejection"):
                self.acks[msg["ref_msg_id"]] = now
                if msg["kind"] == "rejection":
                    print("rejected:", msg["reason"], msg["detail"], file=sys.stderr)
            self.changed.notify_all()

    def bid(self) -> str:
        assert self.request is not None
        self.n += 1
        r = self.request
        msg_id = f"{ME}-{self.n:07d}"
        bid = {
            "kind": "bid",
            "topic": f"flech/SRP/{r['market_id']}/bid",
            "msg_id": msg_id,
            "sender": ME,
            "recipient": PLATFORM,
            "market_id": r["market_id"],
            "product_id": "SRP",
            "sent_at": r["sent_at"],
            "bid_id": f"b{self.n}",
            "price": 0.5,
            "quantities_kw": [1.0] * len(r["need_kw"]),
            "baseline_kw": [10.0] * len(r["need_kw"]),
        }
        self.c.publish(f"flech/in/{ME}/SRP/{r['market_id']}/bid", json.dumps(bid), qos=1)
        return msg_id

    def wait(self, predicate: Any, timeout: float = 60) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise TimeoutError("the platform did not answer in time")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--round-trips", type=int, default=500)
    p.add_argument("--burst", type=int, default=5000)
    p.add_argument("--no-log-denied", action="store_true", help="broker without its debug log (MOSQUITTO_LOG_DENIED=0)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_mqtt-"))
    (tmp / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env_vars = os.environ | {
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "MOSQUITTO_LOG_DENIED": "0" if args.no_log_denied else "1",
    }
    script = REPO / "scripts" / "start-mosquitto.sh"
    subprocess.run(
        ["bash", str(script), "start", str(tmp / "scenario.yaml"), str(port), str(tmp / "broker")],
        check=True,
        env=env_vars,
        capture_output=True,
    )
    try:
        creds = read_credentials(tmp / "broker" / "credentials")
        scenario = scenario_from_dict(SCENARIO)
        n_total = args.round_trips + args.burst
        bridge = Bridge(
            MqttWire(f"mqtt://127.0.0.1:{port}", creds[PLATFORM], wait_online_s=10),
            frozenset({ME}),
            speed=60.0,
            rate=RateLimit(per_second=1e9, burst=10 * n_total),
        )
        env = bridge.environment()
        persistor = Persistor(tmp / "run", scenario.start)
        core = build_core(env, persistor, scenario, {ME: frozenset({"feeder-1"})}, frozenset())
        core.external[ME] = core.endpoint.connect(ME, "aggregator")
        dso = core.endpoint.connect("dso-1", "dso")

        def open_market() -> Any:
            yield env.timeout(0)
            dso.send(
                MarketRequest(
                    msg_id=dso.next_id(),
                    sender="dso-1",
                    recipient=PLATFORM,
                    market_id="m-bench",
                    product_id="SRP",
                    sent_at=0,
                    location="feeder-1",
                    direction=Direction.DOWN,
                    gate_close=1200,
                    delivery_start=1260,
                    interval_minutes=60,
                    need_kw=(50.0, 50.0),
                    price_cap=3.0,
                )
            )

        env.process(open_market())
        client = Client(port, creds[ME])
        bridge.attach(core)
        platform = threading.Thread(target=bridge.run_clock, args=(env, 1200 - 1), daemon=True)
        t_start = time.perf_counter()
        platform.start()
        client.wait(lambda: client.request is not None)
        latencies = []
        for _ in range(args.round_trips):
            t0 = time.perf_counter()
            msg_id = client.bid()
            client.wait(lambda m=msg_id: m in client.acks)
            latencies.append(client.acks[msg_id] - t0)
        t0 = time.perf_counter()
        ids = [client.bid() for _ in range(args.burst)]
        client.wait(lambda: ids[-1] in client.acks and len(client.acks) >= n_total, timeout=300)
        burst_s = max(client.acks[i] for i in ids) - t0
        bridge.stop()
        platform.join(10)
        persistor.close()
        print(
            "Mosquitto on 127.0.0.1, QoS 1, platform in real time at speed 60 (bridge, endpoint, SRP, persistor); "
            f"broker debug log (denied publishes recorded): {'off' if args.no_log_denied else 'on'}"
        )
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"round trip bid -> ack ({len(latencies)} sequential bids): median "
            f"{statistics.median(latencies) * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms, max {latencies[-1] * 1e3:.2f} ms"
        )
        print(
            f"burst of {args.burst} bids: all acked in {burst_s:.2f} s = {args.burst / burst_s:,.0f} bids/s in, "
            f"{2 * args.burst / burst_s:,.0f} messages/s through the broker (bids and acks)"
        )
        inner = sorted(bridge.stats.latencies_s)
        print(f"inside the platform (arrival -> ack published): median {statistics.median(inner) * 1e3:.3f} ms")
        print(
            f"(bridge saw {bridge.stats.received} in, {bridge.stats.published} out; "
            f"simulated minute {env.now:.1f} after {time.perf_counter() - t_start:.1f} s wall)"
        )
        client.c.disconnect()
        client.c.loop_stop()
    finally:
        subprocess.run(["bash", str(script), "stop", str(tmp / "broker")], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
