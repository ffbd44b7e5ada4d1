"""`python -m grpc_model.src.runtimes`: prints the package's extra the served bundle's runtime needs (nothing
for a model_lib wrapper), for the Dockerfile, which installs it beside the main dependencies."""

from grpc_model.src.metadata import load_bundle
from grpc_model.src.runtimes import runtime_extra
from grpc_model.src.settings import Settings

if __name__ == "__main__":
    settings = Settings()
    print(runtime_extra(load_bundle(settings.asset_bundle_dir, settings.model_version)) or "")
