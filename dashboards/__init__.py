"""Prometheus rules and the Grafana "A2A mesh" dashboard, as code.

``rules`` and ``dashboard`` hold the definitions, ``generate`` writes the
committed YAML/JSON (``python -m a2a_quiescence.dashboards.generate``), and
``cli`` adds ``a2a-quiescence dashboards push``.
"""
