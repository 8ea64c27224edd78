#!/usr/bin/env bash
# tools/bench_scaling.sh - the worker-scaling table, prepared for a many-core machine.
#
#   tools/bench_scaling.sh              MTIART_NUM_WORKERS = 1, 2, 4, 8, 16
#   tools/bench_scaling.sh --readme     ... and rewrite README.md's scaling table from the run
#   tools/bench_scaling.sh --workers 1,2,4,8,16,32 [--quick] [--reps N]
#
# Each worker count runs in its own process, the counts interleaved round by round, for
# these workloads: compute-heavy (~50 us) nodes in an independent graph and in a fan-out
# graph, an eager multi-block compute kernel (bench_runtime --scaling), and the MLP
# inference step, replayed and eager (python -m mtia_graph.bench --scaling). Every row is
# the median speedup over 1 worker within a round, with its spread; counts above the CPU
# count are marked oversubscribed. Writes the JSON lines to
# $BENCH_BUILD_DIR/scaling-results.jsonl and a markdown table to
# $BENCH_BUILD_DIR/scaling-results.md, and prints how long it took. Sized to finish in a few
# minutes on a 16-core machine (and on 2 cores, oversubscribed). Builds and installs like
# tools/bench.sh (same environment variables).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BENCH_BUILD_DIR:-build-bench}"
case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
esac
start=$(date +%s)
status=0
bash "$REPO/tools/bench.sh" --scaling --output "$BUILD/scaling-results.jsonl" \
    --markdown "$BUILD/scaling-results.md" "$@" || status=$?
echo "==== bench_scaling: $(( $(date +%s) - start )) s; table in $BUILD/scaling-results.md" >&2
exit "$status"
