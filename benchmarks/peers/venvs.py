"""Each peer's own virtual environment under `.bench-venvs/`, made by the benchmark from pinned releases.

The peers pin libraries this project's environment has newer (MLServer pins protobuf below 7 and an older
FastAPI), so none of them can share it. A venv is made once per pin and reused while the pin stays the same.
"""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grpc_model.src.settings import PROJECT_ROOT

VENVS = PROJECT_ROOT / ".bench-venvs"
"""Git-ignored; delete it to reinstall every peer."""


@dataclass(frozen=True)
class Pin:
    """What to install for one peer, and which command of its venv serves."""

    name: str
    requirements: tuple[str, ...]
    command: str


# uvloop 0.22 broke MLServer 1.7.1's parallel workers ("There is no current event loop", SeldonIO/MLServer#2286).
MLSERVER = Pin("mlserver", ("mlserver==1.7.1", "uvloop==0.21.0"), "mlserver")
LITSERVE = Pin("litserve", ("litserve==0.2.19",), "python")
BENTOML = Pin("bentoml", ("bentoml==1.4.40",), "bentoml")


def base_python() -> str:
    """The interpreter this venv was made from, so every peer runs on the same Python as this project."""
    return getattr(sys, "_base_executable", sys.executable)


def ensure(pin: Pin, root: Path = VENVS) -> Path:
    """The path of `pin.command` in the peer's venv, installing the venv first unless it matches the pin."""
    venv = root / pin.name
    marker = venv / "installed.txt"
    wanted = "\n".join(pin.requirements) + "\n"
    if not (marker.exists() and marker.read_text() == wanted):
        print(f"installing {', '.join(pin.requirements)} into {venv} (once)", flush=True)
        subprocess.run([base_python(), "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *pin.requirements], check=True)
        marker.write_text(wanted)
    return venv / "bin" / pin.command
