"""What a runtime is given to load: its model.yaml section resolved against the bundle and the resources."""

from dataclasses import dataclass
from pathlib import Path


class RuntimeLoadError(Exception):
    """The model file cannot be served: it does not load, or has a shape the runtime cannot serve."""


@dataclass(frozen=True)
class RuntimeConfig:
    """Picklable, so that a spawned worker process loads the same model."""

    kind: str
    path: Path
    """The model file, absolute."""
    features: tuple[str, ...]
    """runtime.features: the column names, in the model's order; empty for the model's own."""
    input_file: str
    """The item's file that holds rows (the one input in model.yaml)."""
    threads: int
    """Library threads per call, from resources.cpu.count."""
    gpu: bool
    """resources.gpu.count > 0: use a GPU where the library can."""
