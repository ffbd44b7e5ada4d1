"""What an operator watches a running server by: metrics (metrics.py), logs (logs.py) and tracing (tracing.py).

Leaves that import nothing of the framework, so every part of the server can report into them.
"""
