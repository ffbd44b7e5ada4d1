"""Servers of the examples for the benchmark: the digits model with a chosen maxBatchSize."""

from pathlib import Path

import yaml

from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import PROJECT_ROOT

DIGITS = PROJECT_ROOT / "examples" / "digits"
DIGITS_INPUT = "image.png"


def digits_bundle(directory: Path, max_batch_size: int) -> Path:
    """The digits bundle's model.yaml with `features.maxBatchSize` set, under `directory` (no test cases)."""
    bundle = load_bundle(DIGITS / "asset_bundle")
    spec = yaml.safe_load((bundle.path / "model.yaml").read_text())
    spec["features"]["maxBatchSize"] = max_batch_size
    (directory / bundle.version).mkdir(parents=True)
    (directory / bundle.version / "model.yaml").write_text(yaml.safe_dump(spec))
    return directory


def digits_command(python: str, bundle: Path) -> list[str]:
    """The server command for the digits model (its package on PYTHONPATH: see digits_env)."""
    return [python, "-m", "grpc_model.src.model_server", "--host", "127.0.0.1", "--load-model-at-startup",
            "--model-class", "digits_model.model", "--asset-bundle-dir", str(bundle),
            "--log-level", "WARNING"]  # fmt: skip


def digits_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "PYTHONPATH": f"{DIGITS}:{PROJECT_ROOT}"}


def digits_image() -> bytes:
    """A held-out digit as a 32x32 PNG: the second test case's input."""
    cases = load_test_cases(load_bundle(DIGITS / "asset_bundle"))
    return cases[1].inputs[DIGITS_INPUT]
