#!/usr/bin/env bash
# Virtualenvs with older a2a-sdk releases, for tests/test_compat.py: 1.0.3 is
# the oldest supported 1.x, 1.1.1 the last without aclose(), 1.2.3 the previous
# minor; on the 0.3 line 0.3.4 (the oldest with the http-server extra, and the
# floor google-adk declares), 0.3.9 (BeeAI's floor) and 0.3.26 (the newest).
# And fasta2a 2.1.1 (tests/test_fasta2a.py). Each holds this project (editable, no
# deps) beside that library.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# name|what pip installs beside this project
ENVS=()
for version in 1.0.3 1.1.1 1.2.3 0.3.4 0.3.9 0.3.26; do
    ENVS+=("a2a-sdk-$version|a2a-sdk[http-server]==$version grpcio")
done
# fasta2a (pydantic-ai's A2A server), with pydantic-ai for its agent worker
ENVS+=("fasta2a-2.1.1|fasta2a[pydantic-ai]==2.1.1")
for entry in "${ENVS[@]}"; do
    name=${entry%%|*}
    read -r -a packages <<<"${entry#*|}"
    dir=".tools/compat/$name"
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import a2a_quiescence.instrumentation" 2>/dev/null; then
        continue
    fi
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q "${packages[@]}" opentelemetry-sdk \
        opentelemetry-instrumentation opentelemetry-exporter-otlp prometheus-client wrapt uvicorn httpx starlette
    # setuptools' build chatter for the editable install goes to a log, shown when it fails
    if ! "$dir/bin/python" -m pip install -q --no-deps -e . >"$dir/install.log" 2>&1; then
        tail -n 40 "$dir/install.log" >&2
        exit 1
    fi
    echo "install-compat: ${packages[*]} -> $dir"
done
