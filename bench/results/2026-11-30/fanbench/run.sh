#!/usr/bin/env bash
# How the fanbench figures of 2026-11-30 were taken (BENCHMARKS.md, issue 12): fanbench
# (../shared/tools/fanbench, built as its README says into target/fanbench) against chatd and
# InspIRCd, 500 rooms x 10 at 1 msg/s, --threads 1, quiet and with a busy-loop neighbour on
# one core. Run from the repository root; each run's last line (a JSON report) is kept
# beside this script.
set -u
FB=target/fanbench/release/fanbench
CHATD=${CHATD:-target/release/chatd}
OUT=${OUT:-/tmp/fb}; mkdir -p "$OUT"
for neighbour in no yes; do
  for server in chatd inspircd; do
    if [[ $server == chatd ]]; then
      $CHATD --listen 127.0.0.1:17878 --store memory --no-rate-limit --http-listen none --names-per-minute 1000000 --rooms-per-minute 1000000 >/dev/null 2>&1 & P=$!
      args=(--proto chatd --addr 127.0.0.1:17878)
    else
      sed -e "s|/tmp/chatd-bench-|$OUT/|" bench/peers/inspircd.conf > $OUT/inspircd.conf
      inspircd --runasroot --nofork --config $OUT/inspircd.conf >/dev/null 2>&1 & P=$!
      args=(--proto irc --addr 127.0.0.1:16667)
    fi
    sleep 1
    N=
    if [[ $neighbour == yes ]]; then timeout 120 sh -c 'while :; do :; done' & N=$!; fi
    echo "== $server neighbour=$neighbour"
    timeout 300 $FB --threads 1 "${args[@]}" --server-pid $P --connect-timeout 30 --setup-timeout 240 --drain 5 rooms -r 500 -k 10 --rate 1 -d 8 > $OUT/$server-$neighbour.txt 2>&1
    tail -1 $OUT/$server-$neighbour.txt
    [[ -n $N ]] && kill $N
    kill $P; wait $P 2>/dev/null
    sleep 1
  done
done
