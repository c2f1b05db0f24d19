#!/usr/bin/env bash
# Run the demo: the sidecar collector, Prometheus with the project's rules,
# Alertmanager, and an A -> B -> C agent mesh (each agent a subprocess under
# opentelemetry-instrument); cascades settle with their outcome, a multi-turn
# task awaits input without being stuck, the #1101 hang is caught, a leak at
# shutdown and work cancelled by a clean aclose() drain (settled lost) raise
# their alerts. Sets itself up first (scripts/setup.sh --demo).
# Extra arguments go to `python -m a2a_quiescence.demo` (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m a2a_quiescence.demo "$@"
