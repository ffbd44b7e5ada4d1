"""What keeps the server safe from its callers: TLS credentials, bearer tokens, and memory limits.

The modules are imported one by one: limits.py knows no transport, so the data plane can use it
without importing gRPC.
"""
