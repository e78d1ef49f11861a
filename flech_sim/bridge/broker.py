"""Mosquitto configuration for a scenario: credentials, password file and ACL of its external participants.

The broker is the first line of authorisation: each external participant logs in with its own
user name (its participant ID; ``use_username_as_clientid`` makes that its client ID too, so the
broker's log names it) and may

* publish only under ``flech/in/<its id>/...`` (its messages to the platform; the rest of the topic
  is the message's own ``<product>/<market>/<kind>``) and ``flech/status/<its id>`` (online/offline),
* read only its inbox ``flech/inbox/<its id>`` (everything the platform sends it).

The platform's bridge (user ``flech``) reads every participant's ``flech/in`` and ``flech/status``
and writes every inbox. The endpoint checks again that a message's sender is the topic's participant.

Passwords come from each participant's ``password_file`` in the scenario or are generated here; they
are written, with the platform's, to ``<dir>/credentials`` (mode 600, ``user:password`` lines) and
never into the repository. ``python -m flech_sim.bridge.broker SCENARIO.yaml DIR PORT`` writes the
files; ``scripts/start-mosquitto.sh`` calls it and starts the broker.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import subprocess
import sys
from pathlib import Path

from ..messages import PLATFORM
from ..scenario import AggregatorConfig, BuyerConfig, Scenario, load_scenario

INBOX = "flech/inbox/{}"
INCOMING = "flech/in/{}/"
STATUS = "flech/status/{}"


def external_participants(scenario: Scenario) -> dict[str, str | None]:
    """External participant ID -> its password file (None: generate), in ID order."""
    parts: list[BuyerConfig | AggregatorConfig] = [*scenario.buyers, *scenario.aggregators]
    return {p.id: p.password_file for p in sorted(parts, key=lambda p: p.id) if p.external}


def credentials(scenario: Scenario, base: Path | None = None) -> dict[str, str]:
    """User -> password for the platform and every external participant (files read, else generated)."""
    out = {PLATFORM: secrets.token_urlsafe(18)}
    for pid, ref in external_participants(scenario).items():
        if ref is None:
            out[pid] = secrets.token_urlsafe(18)
            continue
        path = Path(ref) if base is None or Path(ref).is_absolute() else base / ref
        out[pid] = path.read_text().strip()
        if not out[pid] or ":" in out[pid] or "\n" in out[pid]:
            raise ValueError(f"{path}: a password is one line without ':'")
    return out


def read_credentials(path: Path) -> dict[str, str]:
    """The ``user:password`` lines of a credentials file."""
    pairs = (line.split(":", 1) for line in Path(path).read_text().splitlines() if ":" in line)
    return {u: p for u, p in pairs}


def acl(participants: list[str]) -> str:
    """Mosquitto ACL: the platform everywhere under flech/, each participant its own topics only."""
    lines = [f"user {PLATFORM}", "topic read flech/in/#", "topic read flech/status/#", "topic write flech/inbox/#", ""]
    for pid in participants:
        lines += [
            f"user {pid}",
            f"topic write {INCOMING.format(pid)}#",
            f"topic write {STATUS.format(pid)}",
            f"topic read {INBOX.format(pid)}",
            "",
        ]
    return "\n".join(lines)


def config(directory: Path, port: int, log_denied: bool = True) -> str:
    """mosquitto.conf: loopback only, no anonymous clients, persistent sessions kept in memory.
    ``log_denied``: log at debug level, the only one at which Mosquitto logs a publish its ACL denied
    (the bridge reads them from the log and records them); it costs the broker time on every message."""
    d = directory.resolve()
    return "\n".join(
        [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # started as root, mosquitto would switch to its own user
            "per_listener_settings false",
            f"listener {port} 127.0.0.1",
            "set_tcp_nodelay true",  # else Nagle's algorithm and delayed ACKs add ~40 ms per hop to a round trip
            "allow_anonymous false",
            f"password_file {d / 'passwd'}",
            f"acl_file {d / 'acl'}",
            "use_username_as_clientid true",
            "max_queued_messages 100000",  # an offline participant's inbox, kept for its reconnect
            "persistent_client_expiration 1d",
            "max_inflight_messages 100",
            "log_dest stdout",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            *(["log_type debug"] if log_denied else []),
            "connection_messages true",
            "log_timestamp true",
            "",
        ]
    )


def write_broker_files(
    scenario: Scenario,
    directory: Path,
    port: int,
    base: Path | None = None,
    passwords: dict[str, str] | None = None,
    log_denied: bool = True,
) -> Path:
    """Write credentials, passwd (hashed with ``mosquitto_passwd``), acl and mosquitto.conf; returns the conf."""
    directory.mkdir(parents=True, exist_ok=True)
    users = passwords if passwords is not None else credentials(scenario, base)
    cred = directory / "credentials"
    cred.touch(mode=0o600)
    os.chmod(cred, 0o600)
    cred.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    passwd = directory / "passwd"
    passwd.write_text(cred.read_text())
    os.chmod(passwd, 0o600)
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
    (directory / "acl").write_text(acl(sorted(u for u in users if u != PLATFORM)))
    conf = directory / "mosquitto.conf"
    conf.write_text(config(directory, port, log_denied))
    return conf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flech_sim.bridge.broker", description=__doc__.splitlines()[0])
    p.add_argument("scenario", type=Path)
    p.add_argument("directory", type=Path)
    p.add_argument("port", type=int)
    p.add_argument(
        "--no-log-denied",
        action="store_true",
        help="no debug log: faster, but publishes the ACL denies are not recorded by the platform",
    )
    args = p.parse_args(argv)
    scenario = load_scenario(args.scenario)
    print(
        write_broker_files(
            scenario, args.directory, args.port, base=args.scenario.parent, log_denied=not args.no_log_denied
        )
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
