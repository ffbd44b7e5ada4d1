"""The model's metadata: asset bundles, `model.yaml`, functional test cases."""

from grpc_model.src.metadata.bundle import AssetBundle, BundleError, available_versions, load_bundle
from grpc_model.src.metadata.schema import DockerMetadata, ModelSpec
from grpc_model.src.metadata.test_cases import TestCase, load_test_case, load_test_cases, output_differences

__all__ = [
    "AssetBundle",
    "BundleError",
    "DockerMetadata",
    "ModelSpec",
    "TestCase",
    "available_versions",
    "load_bundle",
    "load_test_case",
    "load_test_cases",
    "output_differences",
]
