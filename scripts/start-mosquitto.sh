#!/usr/bin/env bash
# Start (or stop) a Mosquitto broker for a scenario's external participants, on a loopback port.
#   scripts/start-mosquitto.sh start SCENARIO.yaml PORT DIR   -> DIR/{credentials,passwd,acl,mosquitto.conf,mosquitto.pid}
#   scripts/start-mosquitto.sh stop DIR
# Installs Debian's mosquitto if it is missing (needs root or sudo). Passwords: each external
# participant's password_file in the scenario, else generated into DIR/credentials (mode 600).
# PYTHON (default: .venv/bin/python, else python3) runs flech_sim.bridge.broker to write the files.
# MOSQUITTO_LOG_DENIED=0: no debug log (faster; publishes the ACL denies are then not recorded by the platform).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
if [[ "$cmd" == stop ]]; then
  dir="${2:?usage: $0 stop DIR}"
  if [[ -f "$dir/mosquitto.pid" ]]; then
    pid="$(cat "$dir/mosquitto.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/mosquitto.pid"
  fi
  exit 0
fi
[[ "$cmd" == start ]] || { echo "usage: $0 start SCENARIO.yaml PORT DIR | stop DIR" >&2; exit 2; }
scenario="${2:?scenario}"; port="${3:?port}"; dir="${4:?dir}"
[[ "$port" =~ ^[0-9]+$ ]] || { echo "error: port must be a number" >&2; exit 2; }
if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
  sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y mosquitto >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null && \
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y mosquitto >/dev/null; }
fi
broker="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then python="$here/.venv/bin/python"; else python=python3; fi
fi
mkdir -p "$dir"
conf="$(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" -m flech_sim.bridge.broker "$scenario" "$dir" "$port" \
  ${MOSQUITTO_LOG_DENIED:+$([[ "$MOSQUITTO_LOG_DENIED" == 0 ]] && echo --no-log-denied)})"
"$broker" -c "$conf" > "$dir/mosquitto.out" 2>&1 &
echo $! > "$dir/mosquitto.pid"
for _ in $(seq 100); do  # ready when the port accepts connections (at most 10 s)
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "mosquitto listening on 127.0.0.1:$port (pid $(cat "$dir/mosquitto.pid"))"; exit 0; fi
  kill -0 "$(cat "$dir/mosquitto.pid")" 2>/dev/null || break
  sleep 0.1
done
echo "error: mosquitto did not start; see $dir/mosquitto.out" >&2
cat "$dir/mosquitto.out" >&2 || true
exit 1
