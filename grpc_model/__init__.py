"""A gRPC server for machine-learning models speaking the ModzyModel protocol."""

# The served model version: the asset bundle `asset_bundle/<__version__>/` and its
# `model.yaml` must agree with it. Change it with `scripts/new_version.py`, never by hand.
__version__ = "0.1.0"
