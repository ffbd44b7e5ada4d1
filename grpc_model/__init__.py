"""A gRPC server for machine-learning models speaking the ModzyModel protocol."""

# The framework's version. The served model's version is its asset bundle's: the newest
# `asset_bundle/<x.y.z>/` (see `grpc-model new-version`).
__version__ = "0.1.0"
