#!/usr/bin/env python3
"""An aggregator outside flech_sim: a separate process speaking only MQTT and the public JSON messages.

It needs nothing of flech_sim -- only ``paho-mqtt`` and the message schema (docs/messages.schema.json):

* logs in as its participant ID (the broker's ACL lets it publish only under ``flech/in/<id>/`` and
  read only ``flech/inbox/<id>``), with a persistent session, so nothing sent while it is away is lost;
* announces itself with ``online`` on ``flech/status/<id>`` (retained; ``offline`` is its will);
* answers every bid request with one bid: ``--capacity-kw`` (at most the need) in every interval at
  ``--price`` DKK/kWh, if that is under the price cap, declaring ``--baseline-kw`` as its portfolio
  baseline (it does not control households: a test of the market interface, not of
  delivery); a deterministic strategy, so a run with it is
  comparable with the same strategy in-process (:class:`FixedPriceStrategy` is what both use);
* logs acknowledgements, rejections, awards and settlements it receives as JSON lines on stdout.

    python examples/external_aggregator.py --id agg-x --password-file creds/agg-x --broker mqtt://127.0.0.1:1883
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse


class FixedPriceStrategy:
    """One bid per bid request: ``min(need, capacity_kw)`` per interval at ``price`` (none above the cap)."""

    def __init__(self, me: str, price: float = 0.6, capacity_kw: float = 30.0, baseline_kw: float = 60.0) -> None:
        self.me, self.price, self.capacity_kw, self.baseline_kw = me, price, capacity_kw, baseline_kw
        self.sent = 0
        self.received: dict[str, int] = {}
        self.seen: set[str] = set()

    def __call__(self, text: str | bytes) -> list[str]:
        """The messages (JSON texts) to send in answer to one message from the platform."""
        msg = json.loads(text)
        if msg.get("msg_id") in self.seen:  # QoS 1 is at least once: a redelivery is answered already
            return []
        self.seen.add(msg.get("msg_id"))
        kind = msg.get("kind", "?")
        self.received[kind] = self.received.get(kind, 0) + 1
        if kind != "bid_request" or self.price > msg["price_cap"]:
            return []
        quantities = [round(min(need, self.capacity_kw), 3) for need in msg["need_kw"]]
        if not any(q > 0 for q in quantities):
            return []
        self.sent += 1
        product, market = msg["product_id"], msg["market_id"]
        bid = {
            "kind": "bid",
            "topic": f"flech/{product}/{market}/bid",
            "msg_id": f"{self.me}-{self.sent:06d}",
            "sender": self.me,
            "recipient": "flech",
            "market_id": market,
            "product_id": product,
            "sent_at": msg["sent_at"],
            "bid_id": f"{self.me}-{market}-0",
            "price": self.price,
            "quantities_kw": quantities,
            "block": False,
            "baseline_kw": [self.baseline_kw] * len(quantities),  # its portfolio's expected draw, declared
        }
        return [json.dumps(bid, separators=(",", ":"))]


def main(argv: list[str] | None = None) -> int:
    import paho.mqtt.client as mqtt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--id", required=True, help="participant ID (the scenario's external aggregator)")
    p.add_argument("--password-file", type=Path, required=True)
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    p.add_argument("--price", type=float, default=0.6, help="DKK/kWh")
    p.add_argument("--capacity-kw", type=float, default=30.0)
    p.add_argument("--baseline-kw", type=float, default=60.0, help="declared portfolio baseline per interval")
    p.add_argument(
        "--exit-after-settlements",
        type=int,
        default=0,
        help="stop after this many settlement statements (0: run until SIGTERM/SIGINT)",
    )
    args = p.parse_args(argv)
    url = urlparse(args.broker)
    strategy = FixedPriceStrategy(args.id, args.price, args.capacity_kw, args.baseline_kw)
    done = threading.Event()
    me = args.id

    def on_connect(client, userdata, flags, rc, properties=None):  # type: ignore[no-untyped-def]
        if rc.is_failure:
            print(json.dumps({"event": "connect_failed", "reason": str(rc)}), flush=True)
            done.set()
            return
        sock = client.socket()  # small messages: no Nagle delay (~40 ms each) on this socket
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(f"flech/inbox/{me}", qos=1)

    def on_subscribe(client, userdata, mid, rcs, properties=None):  # type: ignore[no-untyped-def]
        client.publish(f"flech/status/{me}", b"online", qos=1, retain=True)
        print(json.dumps({"event": "online", "session_present": None}), flush=True)

    def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
        msg = json.loads(message.payload)
        print(
            json.dumps(
                {
                    "event": "received",
                    "kind": msg.get("kind"),
                    "market_id": msg.get("market_id"),
                    "msg_id": msg.get("msg_id"),
                }
            ),
            flush=True,
        )
        for out in strategy(message.payload):
            client.publish(f"flech/in/{me}/{json.loads(out)['topic'].removeprefix('flech/')}", out, qos=1)
        if (
            args.exit_after_settlements
            and msg.get("kind") == "settlement"
            and strategy.received.get("settlement", 0) >= args.exit_after_settlements
        ):
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=me, clean_session=False, protocol=mqtt.MQTTv311)
    client.username_pw_set(me, args.password_file.read_text().strip())
    client.will_set(f"flech/status/{me}", b"offline", qos=1, retain=True)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: done.set())
    client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=30)
    client.loop_start()
    done.wait()
    client.publish(f"flech/status/{me}", b"offline", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"event": "stopped", "bids_sent": strategy.sent, "received": strategy.received}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
