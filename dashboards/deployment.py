"""What the rules and the dashboard assume about the deployment around them.

Defined once here and imported by the generators, the tests and the push
command, like the metric names in ``a2a_quiescence.names``.
"""

from __future__ import annotations

# Prometheus scrape job of the collector (the Helm chart's ServiceMonitor and
# the example scrape configs use it; A2AQuiescenceCollectorDown matches on it).
COLLECTOR_JOB = "a2a-quiescence"

# Alerts link to docs/runbooks/<AlertName>.md at this address.
RUNBOOK_BASE_URL = "https://github.com/a2a-quiescence/a2a-quiescence/blob/main/docs/runbooks/"

DASHBOARD_UID = "a2a-mesh"
DASHBOARD_TITLE = "A2A mesh"
# Folder `a2a-quiescence dashboards push` uses when --folder is not given.
DEFAULT_FOLDER = "A2A"


def runbook_url(alert: str) -> str:
    """Address of the runbook for ``alert``."""
    return f"{RUNBOOK_BASE_URL}{alert}.md"
