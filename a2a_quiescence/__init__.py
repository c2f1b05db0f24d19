"""a2a-quiescence: observability sidecar for meshes of A2A agents."""

__version__ = "0.1.0"
