#!/usr/bin/env bash
# Multi-node Ray cluster on this one machine, for tests and demos: the head plus the worker
# nodes listed in clusters/local.yaml, each a separate `ray start` with its own raylet, object
# store and temp dir. See clusters/local.yaml for why it is built this way.
#
# Usage (from anywhere; paths are resolved against the repository root):
#   bash clusters/local.sh up       start all nodes and wait until they have joined
#   bash clusters/local.sh env      print `export ...` lines: eval "$(bash clusters/local.sh env)"
#   bash clusters/local.sh status   `ray status` of the running cluster
#   bash clusters/local.sh down     stop it: only the processes this script started, by pid
#
# Settings (environment variables, all optional):
#   LOCAL_RAY_DIR             state folder: token, pids, logs, Ray temp dirs (default /tmp/hpo-ray-<uid>)
#   LOCAL_RAY_CONFIG          node layout (default clusters/local.yaml)
#   LOCAL_RAY_PORT            GCS port of the head (default 6379)
#   LOCAL_RAY_DASHBOARD_PORT  dashboard / jobs API port, bound to 127.0.0.1 (default 8265)
#   LOCAL_RAY_CLIENT_PORT     Ray Client port, for ray:// addresses (default 10001)
#   LOCAL_RAY_WAIT_S          how long `up` waits for the nodes (default 180)
#   PYTHON                    interpreter of the project venv (default .venv/bin/python)
#
# Token authentication is on, as on AWS: `up` writes a random token to $LOCAL_RAY_DIR/auth_token
# (mode 600); every node, and every client that uses the `env` lines, reads it through
# RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH. Requests without it are refused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${LOCAL_RAY_DIR:-/tmp/hpo-ray-$(id -u)}"
CONFIG="${LOCAL_RAY_CONFIG:-$ROOT/clusters/local.yaml}"
PORT="${LOCAL_RAY_PORT:-6379}"
DASH_PORT="${LOCAL_RAY_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${LOCAL_RAY_CLIENT_PORT:-10001}"
WAIT_S="${LOCAL_RAY_WAIT_S:-180}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
RAY_BIN="$(dirname "$PY")/ray"
PIDS="$STATE/pids"          # one "name pid" line per node; each pid is also its session id
TOKEN="$STATE/auth_token"

die() { echo "clusters/local.sh: $*" >&2; exit 1; }

running() {
    # True if any node process recorded in $PIDS is still alive.
    [[ -f "$PIDS" ]] || return 1
    local name pid
    while read -r name pid; do
        kill -0 "$pid" 2>/dev/null && return 0
    done < "$PIDS"
    return 1
}

cluster_env() {
    # What a client needs to reach this cluster: the driver (ray.init / RAY_ADDRESS), `ray job`
    # (RAY_API_SERVER_ADDRESS), `ray status`, all with the token.
    echo "export RAY_ADDRESS=$(cat "$STATE/node_ip"):$PORT"
    echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASH_PORT"
    echo "export RAY_AUTH_MODE=token"
    echo "export RAY_AUTH_TOKEN_PATH=$TOKEN"
}

start_node() {
    # start_node NAME ARGS...: `ray start --block ARGS` in a new session (setsid), so `down` can
    # find everything the node started by its session id; records "NAME PID".
    local name="$1"
    shift
    (
        cd "$ROOT"
        export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$TOKEN"
        # Workers import the project (`platform` must shadow the stdlib module: the repo
        # goes first), and job entrypoints (`ray job submit -- python ...`) run with the
        # head's PATH: put the venv first so `python` there is the project's interpreter.
        export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
        export PATH="$(dirname "$PY"):$PATH"
        setsid "$RAY_BIN" start --block --temp-dir="$STATE/ray/$name" \
            --min-worker-port=0 --max-worker-port=0 --disable-usage-stats "$@" \
            > "$STATE/logs/$name.log" 2>&1 < /dev/null &
        echo "$name $!" >> "$PIDS"
    )
}

cmd_up() {
    [[ -x "$PY" ]] || die "no Python at $PY. Run 'bash setup.sh' in $ROOT first (or set PYTHON)."
    [[ -f "$CONFIG" ]] || die "node layout $CONFIG does not exist (LOCAL_RAY_CONFIG)."
    if running; then
        die "a local cluster is already running (state $STATE). Run 'bash clusters/local.sh down' first."
    fi
    mkdir -p "$STATE/logs" "$STATE/ray"
    chmod 700 "$STATE"
    rm -f "$PIDS"
    if [[ ! -s "$TOKEN" ]]; then
        (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN")
    fi

    # One line per node: NAME NUM_CPUS NUM_GPUS RESOURCES_JSON AGENT_PORT (head first). The
    # fixed ports are checked first, so a clash gives a clear message instead of a
    # half-started cluster; each node gets a free port for its dashboard agent (the default,
    # 52365, can only be used by one node per machine).
    local layout
    layout="$(CONFIG="$CONFIG" STATE="$STATE" \
        PORTS="$PORT:LOCAL_RAY_PORT $DASH_PORT:LOCAL_RAY_DASHBOARD_PORT $CLIENT_PORT:LOCAL_RAY_CLIENT_PORT" \
        "$PY" - <<'EOF'
import json, os, socket, sys, yaml
from ray._private.services import get_node_ip_address

def fail(msg):
    sys.exit(f"clusters/local.sh: {msg}")

for item in os.environ["PORTS"].split():
    port, name = item.split(":")
    with socket.socket() as s:
        # SO_REUSEADDR as the servers use it: connections in TIME_WAIT from a cluster just
        # stopped do not count, a process listening on the port does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", int(port)))
        except OSError:
            fail(f"port {port} is in use; set {name} to a free port.")
path = os.environ["CONFIG"]
with open(path) as f:
    config = yaml.safe_load(f)
try:
    types = config["available_node_types"]
    head_type = config["head_node_type"]
    nodes = [("head", types[head_type])]
    for name, spec in types.items():
        if name != head_type:
            nodes += [(f"{name}-{i}", spec) for i in range(int(spec.get("min_workers", 0)))]
except (KeyError, TypeError, ValueError) as exc:
    fail(f"{path} is not a cluster config with head_node_type and available_node_types ({exc!r}).")
# Ray's Unix sockets live under <temp dir>/session_<date>_<pid>/sockets/ and a socket path
# may not exceed 107 bytes.
longest = max(len(os.path.join(os.environ["STATE"], "ray", name)) for name, _ in nodes)
if longest + len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store") > 107:
    fail(f"the state folder {os.environ['STATE']} is too long for Ray's socket paths "
         "(107 bytes at most); set LOCAL_RAY_DIR to a shorter path, e.g. /tmp/hpo-ray.")
socks = []
for name, spec in nodes:
    res = dict(spec.get("resources") or {})
    cpus, gpus = int(res.pop("CPU", 1)), int(res.pop("GPU", 0))
    s = socket.socket()
    s.bind(("", 0))
    socks.append(s)
    print(name, cpus, gpus, json.dumps(res, separators=(",", ":")), s.getsockname()[1])
for s in socks:
    s.close()
with open(os.path.join(os.environ["STATE"], "node_ip"), "w") as f:
    print(get_node_ip_address(), file=f)
EOF
    )" || exit 1
    local ip
    ip="$(cat "$STATE/node_ip")"

    local name cpus gpus res agent_port n=0
    while read -r name cpus gpus res agent_port; do
        local extra=()
        [[ "$res" != "{}" ]] && extra+=(--resources="$res")
        if [[ "$name" == head ]]; then
            start_node head --head --port="$PORT" \
                --num-cpus="$cpus" --num-gpus="$gpus" "${extra[@]}" \
                --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" \
                --dashboard-agent-listen-port="$agent_port" \
                --ray-client-server-port="$CLIENT_PORT"
            # Workers can only join once the head's GCS answers.
            ADDR="$ip:$PORT" WAIT_S="$WAIT_S" HEAD_PID="$(awk '$1 == "head" {print $2}' "$PIDS")" \
                "$PY" - <<'EOF' || { cmd_down >&2; die "the head did not start; see $STATE/logs/head.log"; }
import os, socket, sys, time
host, port = os.environ["ADDR"].rsplit(":", 1)
deadline = time.time() + float(os.environ["WAIT_S"])
while time.time() < deadline:
    try:
        os.kill(int(os.environ["HEAD_PID"]), 0)
    except OSError:
        sys.exit(1)  # `ray start --head` exited: its log says why
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(1)
EOF
        else
            start_node "$name" --address="$ip:$PORT" \
                --num-cpus="$cpus" --num-gpus="$gpus" "${extra[@]}" \
                --dashboard-agent-listen-port="$agent_port"
        fi
        n=$((n + 1))
    done <<< "$layout"
    echo "local cluster: starting $n nodes (logs in $STATE/logs)"

    # Wait until every node has registered with the head.
    eval "$(cluster_env)"
    if ! WANT="$n" WAIT_S="$WAIT_S" "$PY" - <<'EOF'
import logging, os, sys, time
import ray
want, deadline = int(os.environ["WANT"]), time.time() + float(os.environ["WAIT_S"])
alive = 0
while time.time() < deadline:
    try:
        if not ray.is_initialized():
            ray.init(logging_level=logging.ERROR, log_to_driver=False)
        alive = sum(1 for n in ray.nodes() if n["Alive"])
        if alive >= want:
            print(f"local cluster: {alive} nodes alive (head + {alive - 1} workers)")
            sys.exit(0)
    except Exception:  # the GCS is not up yet
        pass
    time.sleep(2)
sys.exit(f"clusters/local.sh: only {alive} of {want} nodes came up in {os.environ['WAIT_S']} s.")
EOF
    then
        echo "see the logs in $STATE/logs" >&2
        cmd_down >&2 || true
        exit 1
    fi
    echo "dashboard: http://127.0.0.1:$DASH_PORT  (it asks for the token: cat $TOKEN)"
    echo "for this shell:  eval \"\$(bash clusters/local.sh env)\""
    cluster_env | sed 's/^/  /'
}

session_pids() {
    # Processes in session $1 (a node's `ray start` pid), except this script.
    ps -eo pid=,sid= | awk -v sid="$1" -v self="$$" '$2 == sid && $1 != self {print $1}'
}

cmd_down() {
    [[ -f "$PIDS" ]] || { echo "local cluster: not running (state $STATE)"; return 0; }
    local name pid sids=() left
    # Workers first, then the head: SIGTERM makes `ray start --block` stop what it started.
    while read -r name pid; do sids=("$pid" "${sids[@]}"); done < "$PIDS"
    for pid in "${sids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 30); do
        left=""
        for pid in "${sids[@]}"; do kill -0 "$pid" 2>/dev/null && left+="$pid "; done
        [[ -z "$left" ]] && break
        sleep 1
    done
    # Anything still in the nodes' sessions (e.g. a Ray worker that outlived its raylet).
    for sig in TERM KILL; do
        left=""
        for pid in "${sids[@]}"; do left+="$(session_pids "$pid" | tr '\n' ' ')"; done
        [[ -z "${left// /}" ]] && break
        # shellcheck disable=SC2086
        kill -"$sig" $left 2>/dev/null || true
        sleep 3
    done
    rm -f "$PIDS"
    echo "local cluster: stopped (token and logs kept in $STATE)"
}

cmd_status() {
    running || die "no local cluster is running (state $STATE)."
    eval "$(cluster_env)"
    "$RAY_BIN" status --address "$RAY_ADDRESS"
}

cmd_env() {
    running || die "no local cluster is running (state $STATE). Start it with 'bash clusters/local.sh up'."
    cluster_env
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) die "usage: bash clusters/local.sh {up|down|status|env}" ;;
esac
