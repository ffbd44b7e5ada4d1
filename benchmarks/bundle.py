"""A throwaway asset bundle for the benchmark and the soak test: binary files in and out."""

from pathlib import Path

import yaml

from grpc_model.src.metadata import load_bundle
from grpc_model.src.settings import PROJECT_ROOT


def write_bundle(directory: Path, max_size: str = "100M", max_batch_size: int = 32, run_timeout: str = "20s") -> Path:
    """The example bundle with `input.bin` in and `output.bin` out, written under `directory`."""
    example = load_bundle(PROJECT_ROOT / "asset_bundle")
    version = example.version
    spec = yaml.safe_load((example.path / "model.yaml").read_text())
    spec["inputs"] = {"input.bin": {"acceptedMediaTypes": ["application/octet-stream"], "maxSize": max_size}}
    spec["outputs"] = {"output.bin": {"mediaType": "application/octet-stream", "maxSize": max_size}}
    spec["features"]["maxBatchSize"] = max_batch_size
    spec["timeout"]["run"] = run_timeout
    (directory / version).mkdir(parents=True)
    (directory / version / "model.yaml").write_text(yaml.safe_dump(spec))
    return directory
