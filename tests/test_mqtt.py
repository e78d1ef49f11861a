"""External participants over a real Mosquitto broker on a loopback port (issue 15).

The broker is started by ``scripts/start-mosquitto.sh`` (which installs Debian's mosquitto if it is
missing); the tests are skipped, saying why, only if it cannot be installed or started. Each run is
``--speed 0`` (the clock waits for the external participants' answers) unless it tests real time, so
the outcome does not depend on the machine's load, and it is compared with the same scenario whose
external aggregator is run in-process by the same strategy (:class:`LoopbackWire`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from flech_sim.bridge import Bridge, LoopbackWire, RateLimit
from flech_sim.bridge.broker import read_credentials
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[mqtt]')")
import paho.mqtt.client as mqtt

from flech_sim.bridge.mqtt import MqttWire

from .mqtt_support import EXAMPLE, ME, REPO, SCENARIO, example

SCRIPT = REPO / "scripts" / "start-mosquitto.sh"
PRICE, CAPACITY_KW = 0.1, 30.0  # cheaper than the simulated aggregator: its bid is taken first, in full
OUTCOME_TABLES = ("markets", "bids", "clearings", "clearing_intervals", "awards", "settlements", "meter_data")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    url: str
    credentials: dict[str, str]
    directory: Path


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("mqtt")
    scenario_file = d / "scenario.yaml"
    scenario_file.write_text(yaml.safe_dump(SCENARIO))
    port = _free_port()
    env = os.environ | {"PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    try:
        r = subprocess.run(
            ["bash", str(SCRIPT), "start", str(scenario_file), str(port), str(d / "broker")],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("mosquitto could not be installed or started within 180 s")
    if r.returncode != 0:
        pytest.skip(f"mosquitto could not be installed or started: {(r.stderr or r.stdout).strip()[-400:]}")
    try:
        yield Broker(f"mqtt://127.0.0.1:{port}", read_credentials(d / "broker" / "credentials"), d / "broker")
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(d / "broker")], timeout=30, check=False)


def _scenario() -> Any:
    return scenario_from_dict(SCENARIO)


def _mqtt_bridge(broker: Broker, **kw: Any) -> Bridge:
    wire = MqttWire(
        broker.url, broker.credentials["flech"], wait_online_s=10, broker_log=broker.directory / "mosquitto.log"
    )
    kw.setdefault("answer_timeout_s", 10.0)
    return Bridge(wire, frozenset({ME}), **kw)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same scenario, its external aggregator answered in-process by the same strategy."""
    out = tmp_path_factory.mktemp("loopback")
    strategy = example().FixedPriceStrategy(ME, PRICE, CAPACITY_KW)
    result = run(_scenario(), out, transport=Bridge(LoopbackWire(lambda pid, text: strategy(text)), frozenset({ME})))
    assert result.completed, result.error
    return out


def _table(run_dir: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / f"{name}.parquet")
    return df.sort_values("seq").reset_index(drop=True) if "seq" in df else df


def _participant(broker: Broker, on_message: Any) -> mqtt.Client:
    """Connected as the external aggregator with a persistent session, started afresh (a session kept
    by the broker from an earlier test would deliver that run's last messages)."""
    port = int(broker.url.rsplit(":", 1)[1])
    fresh = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ME, clean_session=True, protocol=mqtt.MQTTv311)
    fresh.username_pw_set(ME, broker.credentials[ME])
    fresh.connect("127.0.0.1", port)
    fresh.disconnect()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ME, clean_session=False, protocol=mqtt.MQTTv311)
    c.username_pw_set(ME, broker.credentials[ME])
    subscribed = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe(f"flech/inbox/{ME}", qos=1)
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert subscribed.wait(10), "the participant could not subscribe to its inbox"
    c.publish(f"flech/status/{ME}", b"online", qos=1, retain=True).wait_for_publish(5)
    return c


def _stop(c: mqtt.Client) -> None:
    c.publish(f"flech/status/{ME}", b"offline", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def _publish(c: mqtt.Client, text: str, topic: str | None = None) -> None:
    topic = topic or f"flech/in/{ME}/{json.loads(text)['topic'].removeprefix('flech/')}"
    c.publish(topic, text, qos=1)


def test_example_aggregator_as_a_separate_process_is_cleared_like_a_simulated_one(
    broker: Broker, in_process: Path, tmp_path: Path
) -> None:
    pw = tmp_path / "agg-x.password"
    pw.write_text(broker.credentials[ME])
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--id",
            ME,
            "--password-file",
            str(pw),
            "--broker",
            broker.url,
            "--price",
            str(PRICE),
            "--capacity-kw",
            str(CAPACITY_KW),
            "--exit-after-settlements",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        bridge = _mqtt_bridge(broker)
        result = run(_scenario(), tmp_path / "run", transport=bridge)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert result.completed, result.error
    assert bridge.stats.deadlines_passed == 0  # every bid request was answered before the clock moved on
    # The same tables, row for row, as the in-process run of the same strategy.
    for name in (*OUTCOME_TABLES, "messages", "rejections"):
        pd.testing.assert_frame_equal(_table(tmp_path / "run", name), _table(in_process, name), obj=name)
    awards = _table(tmp_path / "run", "awards")
    mine = awards[awards.seller == ME]
    assert len(mine) == 2 * 4 and (mine.accepted_kw == CAPACITY_KW).all()  # cheapest offer: taken in full
    # Every message it sent is a row of messages, in the order it sent them; it got everything sent to it.
    stopped = json.loads(out.strip().splitlines()[-1])
    msgs = _table(tmp_path / "run", "messages")
    came = msgs[(msgs.direction == "in") & (msgs.authenticated_as == ME)]
    assert came.msg_id.tolist() == [f"{ME}-{i:06d}" for i in range(1, stopped["bids_sent"] + 1)]
    assert (came.verdict == "accepted").all() and stopped["bids_sent"] == 2
    went = msgs[(msgs.direction == "out") & (msgs.recipient == ME)]
    assert dict(Counter(went.kind)) == stopped["received"]


def test_misbehaving_client_is_refused_and_recorded_and_honest_outcomes_are_unchanged(
    broker: Broker, in_process: Path, tmp_path: Path
) -> None:
    strategy = example().FixedPriceStrategy(ME, PRICE, CAPACITY_KW)
    requests = 0

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal requests
        answers = strategy(message.payload)
        for text in answers:
            _publish(client, text)
        if not answers or (requests := requests + 1) < 2:
            return
        bid = json.loads(answers[0])  # the second bid request: misbehave after the honest bid
        _publish(client, '{"kind": "bid", "sender": "agg-x", oops', f"flech/in/{ME}/SRP/{bid['market_id']}/bid")
        _publish(client, json.dumps(bid | {"msg_id": "x-as-agg-a", "sender": "agg-a", "bid_id": "stolen"}))
        other = f"flech/in/{ME}/SRP/dso-1-SRP-0-d000/bid"  # a topic not the message's own
        _publish(client, json.dumps(bid | {"msg_id": "x-wrong-topic", "bid_id": "wrong-topic"}), other)
        _publish(client, json.dumps(bid | {"msg_id": "x-to-a"}), "flech/in/agg-a/SRP/m/bid")  # the broker's ACL
        for _ in range(30):  # a flood: the honest bid again and again
            _publish(client, answers[0])

    client = _participant(broker, on_message)
    try:
        bridge = _mqtt_bridge(broker, rate=RateLimit(per_second=0.01, burst=8))
        result = run(_scenario(), tmp_path, transport=bridge)
    finally:
        _stop(client)
    assert result.completed, result.error
    msgs = _table(tmp_path, "messages")
    came = msgs[(msgs.direction == "in") & (msgs.authenticated_as == ME)]
    # 2 honest bids, malformed, claimed sender, wrong topic, the one the broker denied, 30 copies
    assert len(came) == 2 + 4 + 30
    rej = _table(tmp_path, "rejections")
    reasons = Counter(rej[rej.participant == ME].reason)
    # tokens: 8 - 1 (first bid) - 4 (second bid and three bad ones) = 3 copies pass as redeliveries;
    # what the broker denied takes none (the platform acts on nothing of it)
    assert reasons == {"malformed": 1, "unauthorised": 3, "rate_limited": 27}
    assert Counter(came.verdict) == {"accepted": 2, "rejected": 1 + 3 + 27, "redelivery": 3}
    assert bridge.stats.refused_rate == 27 and bridge.stats.refused_topic == 1 and bridge.stats.denied_by_broker == 1
    unauth = rej[(rej.participant == ME) & (rej.reason == "unauthorised")].detail.tolist()
    assert any("claims sender 'agg-a'" in d for d in unauth) and any("published on" in d for d in unauth)
    assert any("the broker refused a publish on 'flech/in/agg-a/SRP/m/bid'" in d for d in unauth)
    assert "x-to-a" not in set(msgs.msg_id)  # what the broker denied did not reach the platform
    # Honest participants' outcomes (and the misbehaving one's honest bids) are those of the clean run.
    for name in OUTCOME_TABLES:
        got, want = _table(tmp_path, name), _table(in_process, name)
        keep = [c for c in want.columns if c not in ("msg_id", "request_msg_id")]  # platform IDs count messages
        pd.testing.assert_frame_equal(got[keep], want[keep], obj=name)


def test_a_participant_that_reconnects_gets_what_it_missed(broker: Broker, tmp_path: Path) -> None:
    strategy = example().FixedPriceStrategy(ME, PRICE, CAPACITY_KW)
    got: list[str] = []
    away = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        got.append(json.loads(message.payload)["msg_id"])
        for text in strategy(message.payload):
            _publish(client, text)
            if not away.is_set():  # leave right after its first bid: the answers come while it is away
                away.set()
                threading.Thread(target=client.disconnect).start()

    client = _participant(broker, on_message)
    try:
        bridge = _mqtt_bridge(broker)
        runner = threading.Thread(
            target=lambda: setattr(bridge, "result", run(_scenario(), tmp_path, transport=bridge))
        )
        runner.start()
        assert away.wait(20)
        time.sleep(1.0)  # away: the ack, market_closed, award and the next bid request wait at the broker
        missed = len(got)
        client.loop_stop()  # its network loop ended with the disconnect
        client.reconnect()
        client.loop_start()
        runner.join(60)
    finally:
        _stop(client)
    assert not runner.is_alive() and bridge.result.completed  # type: ignore[attr-defined]
    msgs = _table(tmp_path, "messages")
    went = msgs[(msgs.direction == "out") & (msgs.recipient == ME)].msg_id.tolist()
    # everything, in order; what was in flight when it left may come twice (QoS 1: at least once)
    assert missed == 1 and list(dict.fromkeys(got)) == went and len(got) - len(went) <= 1, (got, went)
    verdicts = Counter(msgs[(msgs.direction == "in") & (msgs.authenticated_as == ME)].verdict)
    # its first bid may have been in flight too: sent again on reconnect, recorded, answered as the first time
    assert verdicts["accepted"] == 2 and set(verdicts) <= {"accepted", "redelivery"} and verdicts["redelivery"] <= 1
    assert bridge.stats.deadlines_passed == 0


def test_serve_runs_in_real_time_with_the_example_aggregator(broker: Broker, tmp_path: Path) -> None:
    """``flech-sim serve --speed S``: S simulated minutes per wall minute; the external bid is cleared."""
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    (tmp_path / "credentials").write_text("".join(f"{u}:{p}\n" for u, p in broker.credentials.items()))
    (tmp_path / "pw").write_text(broker.credentials[ME])
    speed = 72_000.0  # 1200 simulated minutes a wall second: 60 simulated hours in 3 s
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--id",
            ME,
            "--password-file",
            str(tmp_path / "pw"),
            "--broker",
            broker.url,
            "--price",
            str(PRICE),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        t0 = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "flech_sim.cli",
                "serve",
                str(tmp_path / "scenario.yaml"),
                "--broker",
                broker.url,
                "--credentials",
                str(tmp_path / "credentials"),
                "--speed",
                str(speed),
                "--out",
                str(tmp_path / "run"),
                "--wait-online",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
        )
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    assert r.returncode == 0, r.stderr
    assert "broker            2 in" in r.stdout
    assert wall >= SCENARIO["horizon_hours"] * 60 / (speed / 60)  # the clock was paced, not run flat out
    awards = _table(tmp_path / "run", "awards")
    assert (awards[awards.seller == ME].accepted_kw == CAPACITY_KW).all()


def test_broker_files_give_each_participant_only_its_own_topics(broker: Broker) -> None:
    acl = (broker.directory / "acl").read_text()
    assert f"user {ME}\ntopic write flech/in/{ME}/#\ntopic write flech/status/{ME}\ntopic read flech/inbox/{ME}" in acl
    assert set(broker.credentials) == {"flech", ME}
    assert (broker.directory / "credentials").stat().st_mode & 0o077 == 0
    assert broker.credentials[ME] not in (broker.directory / "passwd").read_text()  # hashed


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_password_files_of_the_scenario_are_used(tmp_path: Path) -> None:
    from flech_sim.bridge.broker import credentials

    (tmp_path / "x.pw").write_text("s3cret-from-file\n")
    d = json.loads(json.dumps(SCENARIO))
    d["aggregators"][1]["password_file"] = "x.pw"
    creds = credentials(scenario_from_dict(d), base=tmp_path)
    assert creds[ME] == "s3cret-from-file" and len(creds["flech"]) >= 20


def test_serve_stopped_midway_leaves_readable_tables_and_an_incomplete_manifest(broker: Broker, tmp_path: Path) -> None:
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    (tmp_path / "credentials").write_text("".join(f"{u}:{p}\n" for u, p in broker.credentials.items()))
    fresh = _participant(broker, lambda *_: None)  # online (retained) and subscribed, answering nothing
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flech_sim.cli",
                "serve",
                str(tmp_path / "scenario.yaml"),
                "--broker",
                broker.url,
                "--credentials",
                str(tmp_path / "credentials"),
                "--speed",
                "12000",
                "--out",
                str(tmp_path / "run"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )
        assert proc.stderr is not None and "serving" in proc.stderr.readline()  # the world is built next
        time.sleep(5.0)  # 200 simulated minutes a second: past the market request at minute 600
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        _stop(fresh)
    assert proc.returncode == 128 + 15, err
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["completed"] is False
    assert 600 < m["simulated_until_minute"] < SCENARIO["horizon_hours"] * 60
    assert m["transport"]["external"] == [ME]
    msgs = pd.read_parquet(tmp_path / "run" / "messages.parquet")
    assert (msgs.kind == "market_request").any() and (msgs.recipient == ME).any()
