"""The model on Ray Serve: a deployment behind Ray's gRPC proxy (optional poetry group `ray`)."""

from grpc_model.src.ray_serve.deployment import SERVICER_FUNCTION, ModzyModelDeployment, app_builder, build_app

__all__ = ["SERVICER_FUNCTION", "ModzyModelDeployment", "app_builder", "build_app"]
