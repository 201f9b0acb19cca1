#!/usr/bin/env bash
# Copied from ../shared/tools/sipbench/kamailio/run_reference.sh (2026-11-29).
# Reference numbers for Kamailio on this machine (see ../README.md).
# Usage: kamailio/run_reference.sh [OUTDIR]        (~50 min on 2 cores)
# SF_MAX / SL_MAX: rates for the at-max latency runs (default: the 2026-11 result).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"; K="$HERE/kamailio"; SB="$HERE/sipbench.py"
OUT="${1:-/tmp/sipbench/reference-$(date +%Y%m%d-%H%M%S)}"; mkdir -p "$OUT"
# tuned: tlsf allocator (Debian's default q_malloc costs ~3x CPU), 1 GiB shm, 2 workers
SF="kamailio -DD -E -f $K/stateful.cfg  -n 2 -m 1024 -M 16 -x tlsf"
SL="kamailio -DD -E -f $K/stateless.cfg -n 2 -m 1024 -M 16 -x tlsf"
COMMON=(--repeat 3 --secs 10 --refine 1 --cooldown 2 --outdir "$OUT")

# 1. highest sustained rate, 3 searches each (proxy restarted for each search)
$SB findmax "${COMMON[@]}" --ladder 2000,5000,8000,10000,12000,15000,20000          # no proxy
$SB findmax "${COMMON[@]}" --ladder 1000,3000,4000,4500,5000,5500,6000,7000 --proxy "kamailio-stateful=$SF"
$SB findmax "${COMMON[@]}" --ladder 2000,5000,7000,8000,9000,10000,11000,12000 --proxy "kamailio-stateless=$SL"

# 2. latency at a moderate rate, capture of both legs (us resolution), interleaved x3
$SB run --baseline --proxy "kamailio-stateful=$SF" --proxy "kamailio-stateless=$SL" \
    --rate 500 --secs 10 --pcap --repeat 3 --cooldown 2 --outdir "$OUT"

# 3. latency at the max (lowest max of the 3 searches), x2
$SB run --proxy "kamailio-stateful=$SF"  --rate "${SF_MAX:-4250}" --secs 10 --pcap --repeat 2 --outdir "$OUT"
$SB run --proxy "kamailio-stateless=$SL" --rate "${SL_MAX:-8000}" --secs 10 --pcap --repeat 2 --outdir "$OUT"
# 4. tuned socket buffer: maxbuffer=4 MiB (-A BIGBUF), stateful with 2 GiB shm
$SB findmax --repeat 2 --secs 10 --refine 1 --cooldown 2 --ladder 7000,8000,9000,10000,11000,12000 \
    --proxy "kamailio-stateful-bigbuf=${SF/-m 1024/-m 2048} -A BIGBUF" --outdir "$OUT"
$SB findmax --repeat 2 --secs 10 --refine 1 --cooldown 2 --ladder 8000,9000,10000,11000,12000,13000,15000 \
    --proxy "kamailio-stateless-bigbuf=$SL -A BIGBUF" --outdir "$OUT"
grep -E "FINDMAX_SUMMARY" "$OUT/results.txt"
echo "results: $OUT/results.txt"
