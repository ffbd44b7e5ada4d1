"""The model's metadata: asset bundles, `model.yaml`, functional test cases."""

from grpc_model.src.metadata.bundle import (
    AssetBundle,
    BundleError,
    available_versions,
    load_bundle,
    newest_version,
    older_bundle_warning,
)
from grpc_model.src.metadata.checks import BundleReport, check_bundle
from grpc_model.src.metadata.schema import DockerMetadata, ModelSpec, Runtime, RuntimeKind, slug
from grpc_model.src.metadata.test_cases import (
    TestCase,
    Tolerance,
    load_test_case,
    load_test_cases,
    output_differences,
)

__all__ = [
    "AssetBundle",
    "BundleError",
    "BundleReport",
    "DockerMetadata",
    "ModelSpec",
    "Runtime",
    "RuntimeKind",
    "TestCase",
    "Tolerance",
    "available_versions",
    "check_bundle",
    "load_bundle",
    "load_test_case",
    "load_test_cases",
    "newest_version",
    "older_bundle_warning",
    "output_differences",
    "slug",
]
