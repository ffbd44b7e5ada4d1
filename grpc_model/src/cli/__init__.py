"""The `grpc-model` command line (see `grpc-model --help`)."""

from grpc_model.src.cli.app import app, main

__all__ = ["app", "main"]
