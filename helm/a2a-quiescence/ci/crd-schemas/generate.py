"""Regenerate the vendored JSON Schemas of the prometheus-operator CRs.

No registry package ships the CRDs' OpenAPI schemas as files, so they are
derived from `cloudcoil-models-prometheus-operator` (PyPI), whose pydantic
models are generated from those CRDs: `model_json_schema()` gives a JSON
Schema, made strict here the way `kubernetes-validate --strict` is (unknown
fields rejected) and with `apiVersion`/`kind` pinned.

    .venv/bin/python helm/a2a-quiescence/ci/crd-schemas/generate.py

The package is installed into a temporary directory, never into the venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "cloudcoil-models-prometheus-operator==0.80.1.0"
KINDS = ("PrometheusRule", "ServiceMonitor", "PodMonitor")
HERE = Path(__file__).resolve().parent


def strict(node: object) -> object:
    """Drop prose, reject unknown properties on every object with known ones."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items() if k not in ("title", "description")}
        if "properties" in node and "additionalProperties" not in node:
            out["additionalProperties"] = False
        pattern = out.get("pattern")
        if isinstance(pattern, str) and "(?i)" in pattern[1:]:
            # Go allows a flag group anywhere; Python (ECMA 262 too) wants it first.
            out["pattern"] = "(?i)" + pattern.replace("(?i)", "")
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def main() -> int:
    with tempfile.TemporaryDirectory() as target:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", target, PACKAGE],
            check=True,
        )
        sys.path.insert(0, target)
        from cloudcoil.models.prometheus_operator import v1

        for kind in KINDS:
            model = getattr(v1, kind)
            schema = strict(model.model_json_schema(by_alias=True, mode="validation"))
            assert isinstance(schema, dict)
            schema["properties"]["apiVersion"] = {"const": "monitoring.coreos.com/v1"}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
            schema = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$comment": f"monitoring.coreos.com/v1 {kind}, derived from {PACKAGE} by generate.py",
                **schema,
            }
            path = HERE / f"{kind.lower()}-monitoring-v1.json"
            path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(f"wrote {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
