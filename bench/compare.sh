#!/usr/bin/env bash
# Runs the same chatd-bench scenarios against chatd, InspIRCd and ngIRCd on this machine, one
# server at a time (each restarted for every scenario, so no run inherits another's rooms,
# users or memory), and prints one Markdown table per scenario.
#
#   apt-get install -y inspircd ngircd      # once
#   bench/compare.sh                        # everything: ~6 minutes on a quiet machine
#   SERVERS="chatd" SCENARIOS="fanout100 rooms" DURATION=3 bench/compare.sh
#   CHATD_BASE=/tmp/chatd-main SERVERS="chatd-base chatd inspircd" bench/compare.sh  # before/after
#   TASKSET=0 SCENARIOS="fanout100 rooms" bench/compare.sh       # servers pinned to one core
#   SERVERS="chatd-irc inspircd ngircd" SCENARIOS="fanout100 fanout1000 rooms idle" \
#       bench/compare.sh                    # all three on IRC (chatd's --irc-listen)
#
# Results: one JSON report per server and scenario under $OUT (default
# target/bench-results/<UTC time>/), plus the bench's readable output in run.log there.
# Every server listens on 127.0.0.1 only; every run is bounded by --duration, --drain and
# --setup-timeout, and the script stops the servers it started when it exits.
set -euo pipefail
# Two cores shared by the server and the bench: anything else running changes the numbers.
# Each report records the load average at its start; compare runs with a low one.

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SERVERS=${SERVERS:-"chatd chatd-sqlite inspircd ngircd"}
SCENARIOS=${SCENARIOS:-"fanout100 fanout1000 rooms rooms-shuffled rooms-busy quiet2000 idle ceiling churn slow-baseline slow"}
# Added to every server's port, for a machine where the default ports are taken.
PORT_SHIFT=${PORT_SHIFT:-0}
# Server CPU pinning, e.g. TASKSET=0 (one core) or TASKSET=0,1: the multi-core figure.
TASKSET=${TASKSET:-}
# 7,000 idle sessions fit under chatd's computed capacity on this machine (7,656 with the
# default vm.max_map_count), so all three servers hold the same number.
IDLE_SESSIONS=${IDLE_SESSIONS:-7000}

BENCH=$ROOT/target/release/chatd-bench
CHATD=$ROOT/target/release/chatd
SERVER_PID=

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Servers start here, so anything they write relative to their directory stays in $OUT.
cd "$OUT"
cargo build --release --quiet -p chatd-bench --manifest-path "$ROOT/Cargo.toml"
if [[ " $SERVERS " == *" chatd"* ]]; then
    if ! cargo build --release --quiet -p chatd --manifest-path "$ROOT/Cargo.toml" \
        >"$OUT/chatd-build.log" 2>&1; then
        [[ -x $CHATD ]] || { echo "chatd does not build and there is no binary" >&2; exit 1; }
        echo "WARNING: chatd does not build (see $OUT/chatd-build.log);" \
            "measuring the existing $CHATD" >&2
    fi
    # Measure a copy, so a rebuild during the run cannot swap the binary between scenarios.
    cp "$CHATD" "$OUT/chatd-bin"
    CHATD=$OUT/chatd-bin
    echo "chatd: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/'
    ), binary built $(date -u -r "$ROOT/target/release/chatd" +%FT%TZ)" | tee "$OUT/chatd-version.txt"
fi
# 10,000 connections need as many descriptors, in the bench and in the servers.
ulimit -n "$(ulimit -Hn)"

# Percentage of both cores busy over one second, from /proc/stat.
cpu_busy_pct() {
    local user nice system idle iowait irq softirq steal total1 idle1 total2 idle2
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    total1=$((user + nice + system + idle + iowait + irq + softirq + steal)) idle1=$((idle + iowait))
    sleep 1
    read -r _ user nice system idle iowait irq softirq steal _ </proc/stat
    total2=$((user + nice + system + idle + iowait + irq + softirq + steal)) idle2=$((idle + iowait))
    echo $((100 - 100 * (idle2 - idle1) / (total2 - total1 + 1)))
}

# Waits (at most QUIET_WAIT seconds) until the machine is nearly idle before a run, and logs
# how busy it was: another process using a core would halve what the server and bench get.
wait_for_quiet() {
    local busy waited=0
    busy=$(cpu_busy_pct)
    while ((busy > 10 && waited < ${QUIET_WAIT:-30})); do
        sleep 2
        waited=$((waited + 3))
        busy=$(cpu_busy_pct)
    done
    BUSY=$busy
}

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT

# start_server SERVER SCENARIO: sets PORT, PROTO and CONNECT (how many connections may be
# mid-handshake at once), then starts the server and waits until it accepts connections.
#  - ngIRCd listens with a backlog of 10: more concurrent connects overflow it and cost
#    1-second SYN retries, so it gets 8.
#  - InspIRCd completes each registration on a once-a-second timer (001 arrives 1.0 s after
#    USER), so it needs many handshakes in flight to connect thousands of clients quickly.
start_server() {
    PIN=
    [[ -z $TASKSET ]] || PIN="taskset -c $TASKSET"
    case $1 in
        chatd)
            # In-memory store, like the IRC servers, which keep nothing either. The command
            # rate limit (5/s per session by default) is off: it exists to stop abuse, and
            # the bench's senders are meant to go faster.
            PORT=$((17878 + PORT_SHIFT)) PROTO=chatd CONNECT=64
            # No quota on new names or rooms either: 5,000 bench users are not an abuse.
            $PIN "$CHATD" --listen 127.0.0.1:$PORT --store memory --no-rate-limit --http-listen none \
                --names-per-minute 1000000 --rooms-per-minute 1000000 \
                >>"$OUT/chatd.log" 2>&1 &
            ;;
        chatd-base)
            # A reference binary (say, main's) beside this one, same flags as `chatd`; an
            # older binary without --names-per-minute holds at most ~1,000 new names.
            PORT=$((17877 + PORT_SHIFT)) PROTO=chatd CONNECT=64
            quota=(--rooms-per-minute 1000000)
            if "$CHATD_BASE" --help | grep -q -- --names-per-minute; then
                quota+=(--names-per-minute 1000000)
            fi
            if "$CHATD_BASE" --help | grep -q -- --http-listen; then
                quota+=(--http-listen none)
            fi
            $PIN "$CHATD_BASE" --listen 127.0.0.1:$PORT --store memory --no-rate-limit \
                "${quota[@]}" >>"$OUT/chatd-base.log" 2>&1 &
            ;;
        chatd-sqlite)
            # The default durable store (SQLite, fsync per group commit), in a fresh file.
            PORT=$((17879 + PORT_SHIFT)) PROTO=chatd CONNECT=64
            rm -f "$OUT/chatd-$2.db"*
            $PIN "$CHATD" --listen 127.0.0.1:$PORT --store sqlite --data "$OUT/chatd-$2.db" \
                --no-rate-limit --http-listen none --names-per-minute 1000000 --rooms-per-minute 1000000 \
                >>"$OUT/chatd-sqlite.log" 2>&1 &
            ;;
        chatd-irc)
            # chatd's IRC listener (--irc-listen), spoken to in IRC like the IRC servers:
            # the memory store, no command rate limit, and no room-creation quota (the rooms
            # and idle scenarios create 500-700 rooms at once; the quota, like the rate
            # limit, is there to stop abuse).
            PORT=$((16669 + PORT_SHIFT)) PROTO=irc CONNECT=64
            $PIN "$CHATD" --listen 127.0.0.1:$((17880 + PORT_SHIFT)) --irc-listen 127.0.0.1:$PORT \
                --store memory --http-listen none --no-rate-limit --names-per-minute 1000000 \
                --rooms-per-minute 1000000 --rooms-per-user-per-hour 1000000 \
                >>"$OUT/chatd-irc.log" 2>&1 &
            ;;
        inspircd)
            PORT=$((16667 + PORT_SHIFT)) PROTO=irc CONNECT=2000
            sed -e "s/port=\"16667\"/port=\"$PORT\"/" -e "s|/tmp/chatd-bench-|$OUT/|" \
                "$ROOT/bench/peers/inspircd.conf" >"$OUT/inspircd.conf"
            $PIN inspircd --runasroot --nofork --config "$OUT/inspircd.conf" \
                >>"$OUT/inspircd.log" 2>&1 &
            ;;
        ngircd)
            PORT=$((16668 + PORT_SHIFT)) PROTO=irc CONNECT=8
            sed -e "s/Ports = 16668/Ports = $PORT/" -e "s|/tmp/chatd-bench-|$OUT/|" \
                "$ROOT/bench/peers/ngircd.conf" >"$OUT/ngircd.conf"
            $PIN ngircd --nodaemon --config "$OUT/ngircd.conf" >>"$OUT/ngircd.log" 2>&1 &
            ;;
        *) echo "unknown server $1" >&2; exit 2 ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$1 did not start listening on 127.0.0.1:$PORT" >&2
    exit 1
}

# The workloads, named; every server runs the same arguments.
scenario_args() {
    case $1 in
        fanout100) echo "fanout --members 100 --senders 10" ;;
        fanout1000) echo "fanout --members 1000 --senders 10" ;;
        rooms) echo "rooms --rooms 500 --members 10 --rate 1" ;;
        # The same, with senders taking turns in a scattered order (as fanbench's clients
        # do): consecutive messages go to different rooms, so nearly every delivery finds
        # its recipient idle. This order made chatd's p99 collapse to hundreds of ms.
        rooms-shuffled) echo "--start-order shuffled rooms --rooms 500 --members 10 --rate 1" ;;
        # ...and with a CPU-bound neighbour (one busy thread) on the machine.
        rooms-busy) echo "--start-order shuffled --neighbour-threads 1 rooms --rooms 500 --members 10 --rate 1" ;;
        # One message a second to 2,000 idle members: the latency of the last delivery.
        quiet2000) echo "fanout --members 2000 --senders 1 --rate 1" ;;
        idle) echo "idle --sessions $IDLE_SESSIONS --members 10 --rate 10" ;;
        # More sessions than chatd's thread budget allows: it must refuse the rest cleanly.
        ceiling) echo "idle --sessions 10000 --members 10 --rate 10" ;;
        churn)
            # Concurrency near each server's best on this machine (InspIRCd's is bounded
            # by its one-second registration timer: cycles/s ~ concurrency).
            case $2 in
                chatd | chatd-base | chatd-sqlite | chatd-irc) echo "churn --concurrency 8" ;;
                inspircd) echo "churn --concurrency 2000" ;;
                ngircd) echo "churn --concurrency 8" ;;
            esac
            ;;
        # 10 senders at 1,000 msg/s each into 100 members: ~1M deliveries/s, below every
        # server's ceiling, so latency reflects the stall and not saturation.
        slow-baseline) echo "slow --no-stall --members 100 --senders 10 --rate 1000" ;;
        slow) echo "slow --stalled 0.1 --stalled-rcvbuf 4096 --members 100 --senders 10 --rate 1000" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

for scenario in $SCENARIOS; do
    for server in $SERVERS; do
        wait_for_quiet
        start_server "$server" "$scenario"
        read -ra args <<<"$(scenario_args "$scenario" "$server")"
        cmd=("$BENCH" --proto "$PROTO" --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID"
            --duration "$DURATION" --warmup "$WARMUP" --connect-concurrency "$CONNECT" "${args[@]}")
        echo "== $server $scenario (machine ${BUSY}% busy before start): ${cmd[*]#"$ROOT/"}" |
            tee -a "$OUT/run.log"
        "${cmd[@]}" --quiet --json >"$OUT/$server-$scenario.json" 2>>"$OUT/run.log" || {
            echo "   (run failed, see $OUT/run.log)" | tee -a "$OUT/run.log"
            rm -f "$OUT/$server-$scenario.json"
        }
        stop_server
        sleep 0.5
    done
done

echo
echo "Machine: $(nproc) cores, $(uname -sr); results in $OUT"
for scenario in $SCENARIOS; do
    files=()
    for server in $SERVERS; do
        [[ -f $OUT/$server-$scenario.json ]] && files+=("$OUT/$server-$scenario.json")
    done
    [[ ${#files[@]} -gt 0 ]] || continue
    echo
    echo "### $scenario: \`chatd-bench $(scenario_args "$scenario" chatd)\`"
    echo
    "$BENCH" table "${files[@]}"
done | tee "$OUT/tables.md"
