"""Observability: metrics (metrics.py) and logs (logs.py); leaves that import nothing of the framework."""
