#!/usr/bin/env bash
# Run the demo: a sidecar collector and an A -> B -> C agent mesh (each agent a
# subprocess under opentelemetry-instrument), send cascades through it and
# wait for each to settle. Extra arguments go to `python -m a2a_quiescence.demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --minimal
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m a2a_quiescence.demo "$@"
