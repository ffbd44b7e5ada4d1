"""The Open Inference Protocol (KServe V2) front end: the gRPC service and the REST routes.

A sibling of the ModzyModel servicer: both call the one data plane (`grpc_model.src.inference`),
so their items share validation, timeouts and the batcher. Only the wiring imports it.
"""
