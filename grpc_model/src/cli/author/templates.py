"""The text of the files `grpc-model init` writes, filled in from its arguments.

Kept as plain text templates (not generated YAML) so the comments that teach the author
each key survive in the files they edit. Every value goes in through one of three quoting
helpers, never pasted: `_py` (a Python string literal), `_yaml` (a YAML double-quoted scalar)
and `_comment` (one line of printable text), so no value can end a line, a string or a comment.
"""

import json
import math
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from grpc_model.src.cli.author.file_spec import FileSpec

JSON_TYPES = ("application/json", "text/json")


def wrapper(name: str, class_name: str, version: str, inputs: "list[FileSpec]", outputs: "list[FileSpec]") -> str:
    title = _comment(name.replace('"', "'").replace("\\", "/"))  # safe inside the docstring
    reads = "\n".join(f"        {f.variable} = model_input[{_py(f.name)}]  # {_comment(f.media_type)}" for f in inputs)
    sizes = ", ".join(f"{_py(f.name)}: len({f.variable})" for f in inputs)
    returns = "\n".join(f"            {_output_line(f)}" for f in outputs)
    return f'''"""The {title} model, wrapped for the server.

Fill in `__init__` (one-time loading) and `handle_single_input` (one item's input files in,
its output files out). The file names are those declared in asset_bundle/{version}/model.yaml.
The server serves the one model class this module defines, whatever its name.
"""

from grpc_model.wrapper import ModelInput, ModelOutput, ModelWrapper, results_json


class {class_name}(ModelWrapper):
    def __init__(self) -> None:
        # Load your model here, once: weights, vocabularies, warm caches. Anything raised here
        # makes Status answer 500 with your message.
        self.name = {_py(name)}

    def handle_single_input(self, model_input: ModelInput, detect_drift: bool, explain: bool) -> ModelOutput:
{reads}
        # Replace this with your model's work. Raise an exception with a clear message to fail
        # this item only: the caller gets it as the item's error.
        result = {{"input_bytes": {{{sizes}}}}}
        return {{
{returns}
        }}

    # Optional: one call for many items (a vectorised or GPU pass). One output per input, in order.
    # def handle_input_batch(
    #     self, model_inputs: list[ModelInput], detect_drift: bool, explain: bool
    # ) -> list[ModelOutput]:
    #     ...
'''


def _py(text: str) -> str:
    """A Python string literal as ruff formats it: a JSON string is one, with the same value, for every text
    that can be written as UTF-8 (scaffold.py refuses lone surrogates)."""
    return json.dumps(text, ensure_ascii=False)


def _comment(text: str) -> str:
    """`text` on one line of printable characters, for a comment or a docstring: repr escapes the rest."""
    return repr(text)[1:-1]


def _yaml(text: str) -> str:
    """A YAML double-quoted scalar holding `text`, whatever it holds (PyYAML escapes what YAML cannot carry)."""
    return yaml.safe_dump(text, default_style='"', allow_unicode=True, width=math.inf).rstrip("\n")


def _output_line(output: "FileSpec") -> str:
    if output.media_type in JSON_TYPES or output.name.endswith(".json"):
        return f"{_py(output.name)}: results_json(result),"
    if output.media_type.startswith("text/"):
        return f"{_py(output.name)}: str(result).encode(),"
    return f'{_py(output.name)}: b"",  # the bytes of {_comment(output.name)} ({_comment(output.media_type)})'


def unit_tests(class_name: str, inputs: "list[FileSpec]", outputs: "list[FileSpec]") -> str:
    sample = ", ".join(f"{_py(f.name)}: b{_py(_sample(f.media_type))}" for f in inputs)
    expected = "{" + ", ".join(_py(f.name) for f in outputs) + "}"
    return f'''"""Unit tests of the model; `grpc-model test` runs them before the functional test cases."""

from model_lib.src.model import {class_name}

SAMPLE = {{{sample}}}  # replace with a real input item


def test_the_model_answers_every_declared_output() -> None:
    output = {class_name}().handle_single_input(SAMPLE, detect_drift=False, explain=False)
    assert set(output) == {expected}
'''


def _sample(media_type: str) -> str:
    return "{}" if media_type in JSON_TYPES else "sample"


def model_yaml(name: str, author: str, version: str, inputs: "list[FileSpec]", outputs: "list[FileSpec]") -> str:
    input_lines = "\n".join(
        f"  {_yaml(f.name)}:\n    acceptedMediaTypes:\n      - {_yaml(f.media_type)}\n"
        "    maxSize: 1M\n    description: ''"
        for f in inputs
    )
    output_lines = "\n".join(
        f"  {_yaml(f.name)}:\n    mediaType: {_yaml(f.media_type)}\n    maxSize: 1M\n    description: ''"
        for f in outputs
    )
    return f"""# yaml-language-server: $schema=../model.schema.json
#
# Metadata of version {version} of your model (specification 0.4). The server validates it at
# start-up and sends it in every Status response; `grpc-model validate` checks it. Blank
# optional keys get defaults.

specification: '0.4'
type: grpc
source: ''
# Must equal this directory's name. REQUIRED.
version: {version}
# The human readable name of the model. REQUIRED.
name: {_yaml(name)}
# Who made the model. REQUIRED.
author: {_yaml(author)}
description:
  summary: ''
  details: ''
  technical: ''
  performance: ''
releaseNotes: {version} - First release.
tags: []
filters: []
metrics: []

# The input files of one item: the key is the file name clients send.
inputs:
{input_lines}

# The output files of one item.
outputs:
{output_lines}

# What one instance of the model needs: memory (512M, 1G), fractional CPUs, whole GPUs.
resources:
  memory:
    size: 512M
  cpu:
    count: 1
  gpu:
    count: 0

# How long Status (including the first load) and Run may take, e.g. 20s.
timeout:
  status: 60s
  run: 60s

internal:
  recommended: false
  experimental: false
  available: true

features:
  adversarialDefense: false
  # The most items the model takes in one batch call.
  maxBatchSize: 8
  retrainable: false
  resultsFormat: null
  driftFormat: null
  explanationFormat: null
"""


def docker_metadata(model_id: str) -> str:
    return f"""# Where the release pipeline pushes this version's image: <registry>/<repo_prefix><id><repo_suffix>.
dockerMetadata:
  - registry: registry.example.com
    repo_prefix: models/
    repo_suffix: ''
# The model's identifier on the platform.
id: {_yaml(model_id)}
"""


def test_cases_note(inputs: "list[FileSpec]", outputs: "list[FileSpec]") -> str:
    input_names = ", ".join(f"`{f.name}`" for f in inputs)
    output_names = ", ".join(f"`{f.name}`" for f in outputs)
    first_output = _yaml(outputs[0].name)
    return f"""# Functional test cases

One directory per case, for example `0001-short-text/`, holding:

- every input file declared under `inputs` in `../model.yaml`: {input_names};
- at least one expected output file declared under `outputs`: {output_names};
- optionally `case.yaml`, every key optional:

  ```yaml
  detect_drift: false   # the Run call's flags for this case (default false)
  explain: false
  tolerance: 0.001      # JSON outputs: numbers may differ by this much (absolute)
  outputs:
    {first_output}:
      tolerance: {{absolute: 1.0e-6, relative: 1.0e-4}}   # this output only; overrides the case's
  ```

JSON outputs are compared as parsed JSON (with a tolerance, two numbers match when
`|got - expected| <= absolute + relative * |expected|`), other files byte for byte. Every
case must succeed; test how the model fails on bad input in `model_lib/tests/`.

`grpc-model validate` checks the cases; `grpc-model test` runs them through the model.
"""
