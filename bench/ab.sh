#!/usr/bin/env bash
# A/B comparison of chatd binaries: alternates them, ROUNDS times, on one fan-out scenario, so
# both see the same machine (two cores are noisy: compare medians and ratios from one run).
#
#   bench/ab.sh /tmp/chatd-before target/release/chatd
#   MEMBERS=1000 ROUNDS=5 bench/ab.sh A B
#   STORE=sqlite bench/ab.sh A B      # the durable default (a fresh database per run)
#   ARGS="--start-order shuffled rooms --rooms 500 --members 10 --rate 1" bench/ab.sh A B
#   PROTO=irc ARGS="rooms --rooms 500 --members 10 --rate 1" bench/ab.sh A B  # over IRC
#
# Each run starts the binary on 127.0.0.1 ($STORE store, default memory; no rate limit, no
# quota on new names or rooms), runs `chatd-bench $ARGS` (default: `fanout --members
# $MEMBERS --senders 10`) for $DURATION seconds, stops it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/target/release/chatd-bench
MEMBERS=${MEMBERS:-100}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
PORT=${PORT:-17900}
STORE=${STORE:-memory}
PROTO=${PROTO:-chatd}
ARGS=${ARGS:-"fanout --members $MEMBERS --senders 10"}
[[ $# -ge 2 ]] || { echo "usage: $0 BINARY BINARY..." >&2; exit 2; }
cargo build --release --quiet -p chatd-bench --manifest-path "$ROOT/Cargo.toml"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for round in $(seq 1 "$ROUNDS"); do
    for binary in "$@"; do
        rm -f "$OUT"/chatd.db*
        # Older binaries have no --names-per-minute (their quota stops a bench at ~1,000), and
        # none before the HTTP listener knows --http-listen (on by default at 127.0.0.1:7879:
        # turned off so that runs cannot clash on it).
        extra=(--rooms-per-minute 1000000)
        help=$("$binary" --help)
        if grep -q -- --names-per-minute <<<"$help"; then extra+=(--names-per-minute 1000000); fi
        if grep -q -- --http-listen <<<"$help"; then extra+=(--http-listen none); fi
        addr=127.0.0.1:$PORT
        if [[ $PROTO == irc ]]; then
            # chatd's IRC listener, as compare.sh's chatd-irc: no per-user room quota either.
            addr=127.0.0.1:$((PORT + 1))
            extra+=(--irc-listen "$addr" --rooms-per-user-per-hour 1000000)
        fi
        "$binary" --listen "127.0.0.1:$PORT" --store "$STORE" --data "$OUT/chatd.db" \
            --no-rate-limit "${extra[@]}" 2>/dev/null &
        pid=$!
        sleep 0.5
        "$BENCH" --proto "$PROTO" --addr "$addr" --server-pid "$pid" --duration "$DURATION" \
            --warmup 1 --json $ARGS >"$OUT/run.json" 2>/dev/null || true
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        python3 - "$binary" "$round" "$OUT/run.json" <<'PY'
import json, sys
binary, round_, path = sys.argv[1:]
d = json.load(open(path)); t = d["traffic"]; s = d["server"]
print(f"{binary} round {round_}: {t['deliveries_per_s'] / 1e6:.3f}M deliveries/s, "
      f"p99 {t['latency']['p99_ms']:.1f} ms, lost {t['lost']}, "
      f"server CPU {s['cpu_pct']:.0f}%, {s['cpu_us_per_delivery']:.3f} us/delivery, "
      f"p50 {t['latency']['p50_ms']:.2f} ms, sessions {d['setup']['sessions_ready']}")
PY
    done
done
