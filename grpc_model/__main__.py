"""`python -m grpc_model`: the `grpc-model` command line."""

from grpc_model.src.cli import main

main()
