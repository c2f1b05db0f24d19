#!/usr/bin/env bash
# Real agent frameworks, each in its own virtualenv, for tests/test_frameworks.py:
# .tools/frameworks/<name>/ holds the framework installed the way a user would,
# with ONE pip command: the framework's own line, what its agent script
# (tests/frameworks/<name>_agents.py) needs, and `a2a-quiescence`, found as
# this checkout's wheel in .tools/dist/ (pinned to this version by a
# constraint file). `pip check` must then be clean.
#
# Idempotent and cached: the wheel is rebuilt only when its sources changed; a
# venv is rebuilt only when its line or our wheel's requirements changed; when
# only our code changed, our wheel alone is reinstalled (--no-deps). A failed
# framework is reported (log in .tools/frameworks/<name>.log), the others go
# on, and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD_PY=.venv/bin/python
[ -x "$BUILD_PY" ] || BUILD_PY=$PY
dist=.tools/dist
frameworks=.tools/frameworks
mkdir -p "$dist" "$frameworks"

# name|the pip line (framework first, then what its agent script needs, then us)
FRAMEWORKS=(
    "adk|google-adk[a2a]==2.13.0 uvicorn a2a-quiescence"
    "agent_framework|agent-framework-a2a==1.0.0b261022 a2a-sdk[http-server] uvicorn a2a-quiescence"
    "strands|strands-agents[a2a]==1.62.0 uvicorn a2a-quiescence"
    "pydantic_ai|fasta2a[pydantic-ai]==2.1.1 uvicorn a2a-quiescence"
)

# --- our wheel -----------------------------------------------------------------
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
source_hash=$(
    {
        sha256sum pyproject.toml
        find a2a_quiescence instrumentation collector dashboards -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
)
wheel="$dist/a2a_quiescence-$version-py3-none-any.whl"
if [ ! -f "$wheel" ] || [ "$(cat "$dist/.source-hash" 2>/dev/null)" != "$source_hash" ]; then
    tmp=$(mktemp -d)
    # built from a copy: setuptools' build/ in the checkout would keep files deleted since
    mkdir "$tmp/src"
    cp -r pyproject.toml README.md a2a_quiescence instrumentation collector dashboards "$tmp/src/"
    find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
    if ! "$BUILD_PY" -m pip wheel -q --no-deps "$tmp/src" -w "$tmp" >"$dist/build.log" 2>&1; then
        tail -n 40 "$dist/build.log" >&2
        echo "install-frameworks: building the wheel failed (log: $dist/build.log)" >&2
        rm -rf "$tmp"
        exit 1
    fi
    rm -f "$dist"/a2a_quiescence-*.whl
    mv "$tmp"/a2a_quiescence-*.whl "$dist/"
    rm -rf "$tmp"
    echo "$source_hash" >"$dist/.source-hash"
    echo "install-frameworks: built $wheel ($source_hash)"
fi
# what decides whether a venv is rebuilt: our requirements (a change there can change the
# resolution); the rest of the wheel only needs the fast path
requires_hash=$("$BUILD_PY" - "$wheel" <<'EOF'
import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = [l for l in z.read(meta).decode().splitlines() if l.startswith(("Requires-Dist:", "Requires-Python:"))]
print(hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16])
EOF
)
constraint="$PWD/$frameworks/constraint.txt"
echo "a2a-quiescence==$version" >"$constraint"

# the environment a user's pip would see, plus our wheel beside the index
pip_env() {
    env -u VIRTUAL_ENV -u PIP_CONSTRAINT PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_FIND_LINKS="$PWD/$dist${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}" PIP_CONSTRAINT="$constraint" "$@"
}

failed=()
for entry in "${FRAMEWORKS[@]}"; do
    name=${entry%%|*}
    line=${entry#*|}
    dir="$frameworks/$name"
    log="$frameworks/$name.log"
    marker="$dir/.a2a-quiescence-installed"
    want_full="$line|$version|$requires_hash"
    if [ -f "$marker" ] && [ -x "$dir/bin/python" ] && [ "$(sed -n 1p "$marker")" = "$want_full" ]; then
        if [ "$(sed -n 2p "$marker")" = "$source_hash" ]; then
            continue  # nothing changed
        fi
        # only our code changed: our wheel alone
        start=$SECONDS
        if pip_env "$dir/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel" >"$log" 2>&1 \
            && pip_env "$dir/bin/python" -m pip check >>"$log" 2>&1; then
            printf '%s\n%s\n' "$want_full" "$source_hash" >"$marker"
            echo "install-frameworks: $name: reinstalled a2a-quiescence only ($((SECONDS - start))s)"
            continue
        fi
        echo "install-frameworks: $name: the fast path failed, rebuilding the venv" >&2
    fi
    start=$SECONDS
    rm -rf "$dir"
    read -r -a packages <<<"$line"
    {
        echo "+ pip install ${packages[*]}"
        "$PY" -m venv "$dir" &&
            pip_env "$dir/bin/python" -m pip install -q --upgrade pip &&
            pip_env "$dir/bin/python" -m pip install -q "${packages[@]}"
    } >"$log" 2>&1 || {
        tail -n 25 "$log" >&2
        echo "install-frameworks: $name: pip install $line FAILED (log: $log)" >&2
        rm -rf "$dir"
        failed+=("$name")
        continue
    }
    check=$(pip_env "$dir/bin/python" -m pip check 2>&1) || {
        echo "$check" | tee -a "$log" >&2
        echo "install-frameworks: $name: pip check FAILED (log: $log)" >&2
        rm -rf "$dir"
        failed+=("$name")
        continue
    }
    sdk=$("$dir/bin/python" -m pip show a2a-sdk 2>/dev/null | sed -n 's/^Version: //p' || true)  # none: fasta2a
    printf '%s\n%s\n' "$want_full" "$source_hash" >"$marker"
    echo "install-frameworks: $name: pip install $line ($((SECONDS - start))s; a2a-sdk ${sdk:-none}); pip check: $check"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "install-frameworks: failed: ${failed[*]}" >&2
    exit 1
fi
