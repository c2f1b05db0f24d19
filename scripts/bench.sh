#!/usr/bin/env bash
# Run every benchmark in benchmarks/ (each prints ratios measured side by side
# in one run; docs/benchmarks.md explains the figures). Sets itself up first.
# Extra arguments go to each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh  # the benchmarks use the test extra (OpenTelemetry distro, uvloop)
export PATH="$PWD/.venv/bin:$PATH"
for bench in bench_overhead bench_instrumentation bench_ingest bench_settlement bench_settlement_loaded bench_tier bench_sidecar bench_gate; do
    echo "== benchmarks.$bench"
    .venv/bin/python -m "benchmarks.$bench" "$@"
done
