"""What the rules and the dashboard assume about the deployment around them.

``Deployment`` is the part a user may change (as a monitoring mixin's
``_config``): the Prometheus scrape job of the collectors and where the
alerts' runbooks live. The rule, promtool-case and dashboard renderers take
one; ``DEFAULT`` is this project's, the one the committed files are rendered
with. The rest is fixed, like the metric names in ``a2a_quiescence.names``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Prometheus scrape job of the collectors (the Helm chart's ServiceMonitor and
# PodMonitor and the example scrape configs set it; A2AQuiescenceCollectorDown
# and the cascade series match on it).
COLLECTOR_JOB = "a2a-quiescence"

# Alerts link to docs/runbooks/<AlertName>.md at this address.
RUNBOOK_BASE_URL = "https://github.com/a2a-quiescence/a2a-quiescence/blob/main/docs/runbooks/"

DASHBOARD_UID = "a2a-mesh"
DASHBOARD_TITLE = "A2A mesh"
# Folder `a2a-quiescence dashboards push` uses when --folder is not given.
DEFAULT_FOLDER = "A2A"


@dataclass(frozen=True)
class Deployment:
    """The scrape job the rules and dashboard select, and the runbooks' base address."""

    job: str = COLLECTOR_JOB
    runbook_base_url: str = RUNBOOK_BASE_URL

    def __post_init__(self) -> None:
        # the job goes into PromQL string literals ("...") unescaped
        if not self.job or any(c in self.job for c in '"\\\n'):
            raise ValueError(f"scrape job {self.job!r}: must be non-empty, without quotes, backslashes or newlines")
        if not self.runbook_base_url:
            raise ValueError("runbook base URL must not be empty")

    def runbook_url(self, alert: str) -> str:
        """Address of the runbook for ``alert``: ``<base>/<alert>.md``."""
        base = self.runbook_base_url
        return f"{base}{'' if base.endswith('/') else '/'}{alert}.md"


DEFAULT = Deployment()


def runbook_url(alert: str) -> str:
    """Address of the runbook for ``alert`` in the default deployment."""
    return DEFAULT.runbook_url(alert)
