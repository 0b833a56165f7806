"""llmd-operator: serve LLMs on Kubernetes at the least cost that still holds their latency SLOs."""

__version__ = "0.1.0"
