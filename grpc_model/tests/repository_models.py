"""Model folders for the repository tests.

A wrapper model is the greeter's model.yaml renamed, with its own `model_lib/` package: every folder's
package is called model_lib, as in real projects, and its files differ only in `tag.txt`, so that two
folders sharing one module in memory would answer with the wrong tag. Each version declares one more input,
`v<version>.txt`, so a call routed to the wrong version fails that version's input checks, and the answer
names the version whose checks passed.
"""

import shutil
from pathlib import Path

import yaml

from grpc_model.tests.conftest import GREETER

RECORDER = '''
import json
import os
from pathlib import Path

from grpc_model.tests.wrappers import gate_file, wait_until
from grpc_model.wrapper import ModelWrapper


class Recorder(ModelWrapper):
    """Answers the model (tag.txt) and version (its marker input) of each item, and logs each batch to BATCH_LOG.

    The item "hold" waits for the gate file "release" (after making "holding"): a call that runs as long as the
    test says."""

    def __init__(self) -> None:
        self.tag = (Path(__file__).parent / "tag.txt").read_text()
        if self.tag == "Failing":
            raise RuntimeError("this model never loads")

    def handle_single_input(self, model_input, detect_drift, explain):
        return self.handle_input_batch([model_input], detect_drift, explain)[0]

    def handle_input_batch(self, inputs, detect_drift, explain):
        answers = [
            {"by": self.tag, "version": _version(item), "echo": item["input.txt"].decode()} for item in inputs
        ]
        if "BATCH_LOG" in os.environ:
            with open(os.environ["BATCH_LOG"], "a") as log:
                log.write(json.dumps([self.tag, [answer["echo"] for answer in answers]]) + "\\n")
        if any(answer["echo"] == "hold" for answer in answers):
            gate_file("holding").touch()
            wait_until(gate_file("release").exists, "the test's release")
        return [{"results.json": json.dumps(answer).encode()} for answer in answers]


def _version(item):
    return ",".join(name[1:-4] for name in item if name.startswith("v") and name.endswith(".txt"))
'''


def marker(version: str) -> str:
    """The input only `version` declares."""
    return f"v{version}.txt"


def write_bundle(bundles: Path, name: str, version: str, **spec_changes: object) -> Path:
    """`bundles/version/model.yaml`: the greeter's, named `name`, with the version's marker input."""
    path = bundles / version
    path.mkdir(parents=True)
    spec = yaml.safe_load((GREETER / "model.yaml").read_text())
    spec.update(name=name, version=version, **spec_changes)
    spec["inputs"][marker(version)] = {"acceptedMediaTypes": ["text/plain"], "maxSize": "1K"}
    spec["features"]["maxBatchSize"] = 8
    (path / "model.yaml").write_text(yaml.safe_dump(spec))
    return path


def write_wrapper_model(root: Path, folder: str, name: str, versions: tuple[str, ...] = ("0.1.0",)) -> Path:
    """A model folder `root/folder` whose model.yaml names it `name`, serving Recorder at each version."""
    path = root / folder
    for version in versions:
        write_bundle(path / "asset_bundle", name, version)
    source = path / "model_lib" / "src"
    source.mkdir(parents=True)
    (path / "model_lib" / "__init__.py").write_text("")
    (source / "__init__.py").write_text("")
    (source / "model.py").write_text(RECORDER)
    (source / "tag.txt").write_text(name)
    return path


def copy_folder(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination
