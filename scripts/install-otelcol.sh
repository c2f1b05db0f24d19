#!/usr/bin/env bash
# Build the OpenTelemetry Collector the tests and the chart check run against,
# .tools/bin/otelcol-a2aq, with the OpenTelemetry Collector Builder from the
# manifest collector/otelcol/builder-config.yaml (Go modules from the Go module
# proxy; no binary download).
#
# Idempotent and cached: does nothing when the binary runs and was built from
# this very manifest with this builder (the SHA-256 of both is kept beside it in
# .tools/bin/otelcol-a2aq.manifest-sha256). A first build takes minutes on two
# cores; the Go build cache makes a rebuild after a manifest change faster.
#
#   bash scripts/install-otelcol.sh           build when missing or stale
#   bash scripts/install-otelcol.sh --check   exit 0 when up to date, 1 when not (no build)
#   bash scripts/install-otelcol.sh --force   build even when up to date
#
# Environment: GO (default: go on PATH, else /usr/local/go/bin/go).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MANIFEST="$ROOT/collector/otelcol/builder-config.yaml"
BIN="$ROOT/.tools/bin"
OTELCOL="$BIN/otelcol-a2aq"
STAMP="$OTELCOL.manifest-sha256"
WORK="$ROOT/.tools/otelcol"
LOG="$WORK/build.log"

mode=build
case "${1:-}" in
    --check) mode=check ;;
    --force) mode=force ;;
    "") ;;
    *) echo "usage: bash scripts/install-otelcol.sh [--check|--force]" >&2; exit 2 ;;
esac

die() { echo "install-otelcol: $*" >&2; exit 1; }

[ -f "$MANIFEST" ] || die "no manifest at $MANIFEST"
# The builder's release is the core release the manifest pins (its otlp receiver).
BUILDER_VERSION="$(sed -n 's#^ *- gomod: go.opentelemetry.io/collector/receiver/otlpreceiver \(v[0-9][0-9.]*\) *$#\1#p' "$MANIFEST")"
[ -n "$BUILDER_VERSION" ] || die "cannot read the core release from $MANIFEST (its otlpreceiver line)"

want="$( { cat "$MANIFEST"; echo "builder $BUILDER_VERSION"; } | sha256sum | cut -d' ' -f1)"
up_to_date() {
    [ -x "$OTELCOL" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
        && "$OTELCOL" --version >/dev/null 2>&1
}

case $mode in
check) up_to_date && exit 0; exit 1 ;;
build) up_to_date && exit 0 ;;
esac

GO="${GO:-$(command -v go || true)}"
[ -n "$GO" ] || GO=/usr/local/go/bin/go
[ -x "$GO" ] || die "Go is missing (looked for go on PATH and /usr/local/go/bin/go); install Go 1.26 or set GO=/path/to/go"

mkdir -p "$WORK" "$BIN"
# The modules say `go 1.26.0`: use the machine's Go, never a downloaded toolchain,
# so that a Go too old for them fails here with Go's own message.
export GOTOOLCHAIN=local
# -trimpath and -ldflags='-s -w' are the builder's own defaults (debug_compilation off).
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export GOBIN="$WORK/gobin"

start=$SECONDS
echo "install-otelcol: building $(basename "$OTELCOL") (collector $BUILDER_VERSION, $("$GO" version | cut -d' ' -f3)); log: ${LOG#"$ROOT"/}"
: >"$LOG"
if [ ! -x "$GOBIN/builder" ] || [ "$("$GOBIN/builder" version 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -n1)" != "$BUILDER_VERSION" ]; then
    if ! "$GO" install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >>"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        die "go install go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION failed (full log: $LOG)"
    fi
fi
rm -rf "$WORK/_build"
# output_path (./_build) is relative to the directory the builder runs in.
if ! (cd "$WORK" && "$GOBIN/builder" --config="$MANIFEST") >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "the OpenTelemetry Collector Builder failed (full log: $LOG)"
fi
built="$WORK/_build/otelcol-a2aq"
[ -x "$built" ] || die "the builder reported success but wrote no $built (full log: $LOG)"
"$built" --version >/dev/null 2>&1 || die "$built does not run (full log: $LOG)"
install -m 0755 "$built" "$OTELCOL.tmp"
mv -f "$OTELCOL.tmp" "$OTELCOL"
echo "$want" >"$STAMP"
echo "install-otelcol: $("$OTELCOL" --version) -> ${OTELCOL#"$ROOT"/} in $((SECONDS - start)) s"
