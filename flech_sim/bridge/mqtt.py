"""The wire to a real MQTT broker (paho-mqtt): the platform's side of the seed's MQTT broker.

Topics (see :mod:`flech_sim.bridge.broker` for the ACL that enforces them):

* ``flech/in/<participant>/<product>/<market>/<kind>`` -- a participant's message to the platform; the
  broker lets only ``<participant>`` publish there, so the topic is the broker-authenticated identity;
* ``flech/inbox/<participant>`` -- everything the platform sends the participant;
* ``flech/status/<participant>`` -- ``online`` (retained, published by the participant on connect) and
  ``offline`` (its will): the run starts once every external participant is online.

Everything is QoS 1. Participants connect with a persistent session (MQTT ``clean_session`` false, their
ID as client ID), so what is published to their inbox while they are away is delivered when they return.
Payloads are the JSON of :func:`flech_sim.messages.to_json`, exactly what the ``messages`` table stores.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from ..messages import PLATFORM
from .transport import Incoming

QOS = 1
_DENIED = re.compile(r"Denied PUBLISH from (\S+) \(d\d, q\d, r\d, m\d+, '(.*)', \.\.\. \((\d+) bytes\)\)")
MAX_QUEUED_PER_PARTICIPANT = 10_000
"""Arrivals kept per participant before the bridge handed them on; beyond: recorded as refused, payload dropped."""


def parse_broker(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` -> (host, port); the default port is 1883."""
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme != "mqtt" or not u.hostname:
        raise ValueError(f"broker URL must look like mqtt://127.0.0.1:1883, not {url!r}")
    return u.hostname, u.port or 1883


class MqttWire:
    """The platform's MQTT client: subscribes to every ``flech/in`` topic, publishes to inboxes."""

    def __init__(
        self,
        broker: str,
        password: str,
        username: str = PLATFORM,
        connect_timeout_s: float = 10.0,
        wait_online_s: float = 0.0,
        broker_log: Path | None = None,
    ) -> None:
        self.host, self.port = parse_broker(broker)
        self.broker_log = broker_log
        self._tail: threading.Thread | None = None
        self._log_read = 0  # bytes of the broker log the tail thread has read
        self._closing = threading.Event()
        self.connect_timeout_s = connect_timeout_s
        self.wait_online_s = wait_online_s
        self._queue: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self._queued: Counter[str] = Counter()  # arrivals not yet taken, per participant (paho thread writes)
        self._lock = threading.Lock()
        self._participants: frozenset[str] = frozenset()
        self._online: set[str] = set()
        self._online_changed = threading.Condition()
        self._subscribed = threading.Event()
        self._connect_rc: object = None
        self._last: mqtt.MQTTMessageInfo | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=username, clean_session=True, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)  # paho's own outgoing queue: unbounded, nothing dropped
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # -- Wire ------------------------------------------------------------------------------------
    def start(self, participants: Sequence[str]) -> None:
        """Connect, subscribe, and wait (up to ``wait_online_s``) for every participant to be online."""
        self._participants = frozenset(participants)
        if self.broker_log is not None:
            log = open(self.broker_log, "rb")  # noqa: SIM115 -- closed by the tail thread
            self._log_read = log.seek(0, os.SEEK_END)  # what an earlier run did is not this run's
            self._tail = threading.Thread(target=self._follow, args=(log,), name="broker-log", daemon=True)
            self._tail.start()
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(self.connect_timeout_s):
            self.client.loop_stop()
            raise ConnectionError(
                f"no connection to the MQTT broker at {self.host}:{self.port} within "
                f"{self.connect_timeout_s:g} s (connect result: {self._connect_rc})"
            )
        if self.wait_online_s > 0:
            deadline = time.monotonic() + self.wait_online_s
            with self._online_changed:
                while not self._participants <= self._online and time.monotonic() < deadline:
                    self._online_changed.wait(max(0.0, deadline - time.monotonic()))
                missing = sorted(self._participants - self._online)
            if missing:  # the run goes on: the broker keeps their inboxes once they have connected
                print(
                    f"warning: not online after {self.wait_online_s:g} s: {missing}; starting anyway",
                    file=sys.stderr,
                    flush=True,
                )

    def publish(self, participant: str, text: str) -> None:
        self._last = self.client.publish(f"flech/inbox/{participant}", text, qos=QOS)

    def get(self, timeout: float) -> Incoming | None:
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        with self._lock:
            self._queued[item.participant] -= 1
        return item

    def close(self) -> None:
        """Let what was published reach the broker (bounded), then disconnect."""
        if self._last is not None and not self._last.is_published():
            with contextlib.suppress(RuntimeError, ValueError):  # not connected any more: nothing to wait for
                self._last.wait_for_publish(timeout=self.connect_timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        self._closing.set()
        if self._tail is not None:
            self._tail.join(5)

    def _follow(self, log: BinaryIO) -> None:
        """Tail the broker's log for publishes its ACL denied (they never reach a subscriber)."""
        with log:
            rest = b""
            while True:
                chunk = log.read(1 << 16)
                if not chunk:
                    if self._closing.is_set():
                        return
                    self._closing.wait(0.02)
                    continue
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    m = _DENIED.search(line.decode("utf-8", "replace"))
                    if m:
                        pid, topic, size = m.groups()
                        self._put(Incoming(pid, "", b"", denied=f"a publish on {topic[:300]!r} ({size} bytes)"))
                self._log_read = log.tell()  # after the items are queued: flush() relies on it

    def flush(self, timeout_s: float = 2.0) -> None:
        """Before the run's last look at arrivals: let the tail thread read the broker log to its end."""
        if self._tail is None or self.broker_log is None:
            return
        end = os.path.getsize(self.broker_log)
        deadline = time.monotonic() + timeout_s
        while self._log_read < end and self._tail.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _put(self, item: Incoming) -> None:
        with self._lock:
            full = self._queued[item.participant] >= MAX_QUEUED_PER_PARTICIPANT
            self._queued[item.participant] += 1
        if full:
            item = Incoming(
                item.participant,
                item.topic,
                b"",
                dropped=f"more than {MAX_QUEUED_PER_PARTICIPANT} "
                "messages waiting for the platform; this one was dropped unread",
            )
        self._queue.put(item)

    @property
    def online(self) -> frozenset[str]:
        with self._online_changed:
            return frozenset(self._online)

    # -- paho callbacks (its network thread) ------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, properties: object = None
    ) -> None:
        self._connect_rc = rc
        if getattr(rc, "is_failure", False):
            return
        no_delay(client)
        client.subscribe([("flech/in/#", QOS), ("flech/status/+", QOS)])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, rcs: object, properties: object = None
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/", 3)
        if len(parts) >= 3 and parts[1] == "status":
            with self._online_changed:
                (self._online.add if msg.payload == b"online" else self._online.discard)(parts[2])
                self._online_changed.notify_all()
            return
        if len(parts) < 3 or parts[1] != "in":
            return
        self._put(Incoming(parts[2], parts[3] if len(parts) > 3 else "", bytes(msg.payload)))


def no_delay(client: mqtt.Client) -> None:
    """Switch Nagle's algorithm off on the client's socket: with it (and delayed ACKs) each small
    message waits ~40 ms for more to send -- a bid's round trip took ~88 ms instead of about one."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def participant_client(participant: str, password: str, broker: str, clean: bool = False) -> mqtt.Client:
    """A participant's client as the public interface expects it: its ID as user and client ID, a
    persistent session, ``offline`` as its will; call ``go_online`` once connected."""
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=participant, clean_session=clean, protocol=mqtt.MQTTv311
    )
    c.username_pw_set(participant, password)
    c.will_set(f"flech/status/{participant}", b"offline", qos=QOS, retain=True)
    return c
