#!/usr/bin/env bash
# Rooms 100x10 and fan-out 100 with the members spread over three cluster nodes on one Redis,
# against one node (memory store, then SQLite): BENCHMARKS.md, "Cluster mode". Rooms are
# 100x10, not 500x10: a server admits 1,000 new user names a minute (src/accounts.rs,
# NEW_NAMES_OVERALL), which `--no-rate-limit` does not lift, so 5,000 fresh names fail.
# Every server gets `--rooms-per-minute 100000`: three nodes otherwise refuse some of the
# rooms scenario's JOINs with `ERR rate-limited` (the new-room quota, 200 a minute per node;
# see BENCHMARKS.md). SCENARIOS="..." (one per line) runs others.
#
#   bench/cluster.sh            # needs redis-server; builds nothing: run
#                               # `cargo build --release -p chatd -p chatd-bench` first
#
# Prints each run's summary and, for the cluster rows, redis-server's CPU over the run (its
# user + system time from /proc over the wall time: Redis runs commands on one core, so 100%
# is the cluster's ceiling). OUT= keeps the logs (default: a temporary directory).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHATD=$ROOT/target/release/chatd
BENCH=$ROOT/target/release/chatd-bench
OUT=${OUT:-$(mktemp -d)}
REDIS_PORT=16390
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_port() { # bounded: 10 s
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2; exit 1
}

if [[ -n ${SCENARIOS:-} ]]; then
    mapfile -t SCENARIOS <<<"$SCENARIOS"
else
    SCENARIOS=(
        "rooms --rooms 100 --members 10 --rate 1"
        "fanout --members 100 --senders 10"
    )
fi

redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir "$OUT" --appendonly yes \
    --appendfsync always --save '' --maxmemory-policy noeviction >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port $REDIS_PORT

for scenario in "${SCENARIOS[@]}"; do
    for setup in memory sqlite cluster3; do
        echo "== $setup: $scenario (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
        nodes=()
        case $setup in
            memory)
                "$CHATD" --listen 127.0.0.1:17801 --store memory --no-rate-limit \
                    --names-per-minute 1000000 --rooms-per-minute 100000 --http-listen none >>"$OUT/chatd.log" 2>&1 &
                nodes=($!); addrs=127.0.0.1:17801 ;;
            sqlite)
                rm -f "$OUT/single.db"*
                "$CHATD" --listen 127.0.0.1:17801 --store sqlite --data "$OUT/single.db" \
                    --no-rate-limit --names-per-minute 1000000 --rooms-per-minute 100000 \
                    --http-listen none >>"$OUT/chatd.log" 2>&1 &
                nodes=($!); addrs=127.0.0.1:17801 ;;
            cluster3)
                redis-cli -p $REDIS_PORT FLUSHALL >/dev/null
                addrs=""
                for n in 1 2 3; do
                    "$CHATD" --listen 127.0.0.1:1781$n --cluster redis://127.0.0.1:$REDIS_PORT \
                        --node-id n$n --no-rate-limit --names-per-minute 1000000 --rooms-per-minute 100000 \
                        --http-listen none >>"$OUT/node$n.log" 2>&1 &
                    nodes+=($!); addrs+="${addrs:+,}127.0.0.1:1781$n"
                done ;;
        esac
        PIDS+=("${nodes[@]}")
        for addr in ${addrs//,/ }; do wait_port "${addr##*:}"; done
        before=$(cpu_ticks "$REDIS_PID"); start=$(date +%s.%N)
        # shellcheck disable=SC2086
        "$BENCH" --quiet --duration 5 --warmup 1 --addrs "$addrs" --server-pid "${nodes[0]}" \
            $scenario | tee "$OUT/$setup-${scenario%% *}.txt"
        after=$(cpu_ticks "$REDIS_PID"); end=$(date +%s.%N)
        if [[ $setup == cluster3 ]]; then
            awk -v t=$((after - before)) -v s="$start" -v e="$end" -v hz="$(getconf CLK_TCK)" \
                'BEGIN { printf "redis-server CPU over the run: %.0f%% of a core\n", 100 * t / hz / (e - s) }'
        fi
        for pid in "${nodes[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
    done
done
