"""The served version's functional test cases, through the wrapper and through the server.

A model author runs just these with `scripts/dev.sh functional`. They test the wrapper
named by GRPC_MODEL_MODEL_CLASS when it is set (as for the server), else the default.
"""

import pytest

import grpc_model
from grpc_model.src.client import check_test_case
from grpc_model.src.metadata import TestCase, load_bundle, load_test_cases, output_differences
from grpc_model.src.runtime.loader import import_wrapper_class, instantiate
from grpc_model.src.settings import Settings
from grpc_model.tests.conftest import USER_MODEL_CLASS, ServerFactory

BUNDLE = load_bundle(Settings().asset_bundle_dir, grpc_model.__version__)
CASES = load_test_cases(BUNDLE)
FLAGS = [(False, False), (True, False), (False, True), (True, True)]


def test_the_bundle_has_test_cases() -> None:
    assert CASES, f"add functional test cases under {BUNDLE.test_cases_dir}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize(("detect_drift", "explain"), FLAGS)
def test_wrapper_single_input(case: TestCase, detect_drift: bool, explain: bool) -> None:
    model = instantiate(import_wrapper_class(USER_MODEL_CLASS))
    output = model.single(case.inputs, detect_drift, explain)
    assert output_differences(case.expected, output) == []


@pytest.mark.parametrize(("detect_drift", "explain"), FLAGS)
def test_wrapper_batch_of_every_case(detect_drift: bool, explain: bool) -> None:
    model = instantiate(import_wrapper_class(USER_MODEL_CLASS))
    if model.batch is None:
        pytest.skip(f"{USER_MODEL_CLASS} has no batch method")
    outputs = model.batch([case.inputs for case in CASES], detect_drift, explain)
    assert [output_differences(case.expected, output) for case, output in zip(CASES, outputs, strict=True)] == [
        [] for _ in CASES
    ]


@pytest.mark.parametrize("batch_size", [1, 8])
def test_every_case_through_the_server(serve: ServerFactory, batch_size: int) -> None:
    server = serve(model_class=USER_MODEL_CLASS)
    assert server.client.status().status_code == 200
    problems = {case.name: check_test_case(server.client, case, batch_size) for case in CASES}
    assert problems == {case.name: [] for case in CASES}
