"""The served version's functional test cases, through the wrapper and through a real server.

`grpc-model test` runs the same cases for an author; here they are part of the whole suite,
so a change to the framework that breaks your model's answers fails it. They test the
wrapper named by GRPC_MODEL_MODEL_CLASS when it is set (as the server would), else the default.
"""

import pytest

from grpc_model.src.cli.author.testing import run_cases_in_process
from grpc_model.src.client import check_test_case
from grpc_model.src.metadata import load_bundle, load_test_cases
from grpc_model.src.settings import Settings
from grpc_model.tests.conftest import USER_MODEL_CLASS, ServerFactory

BUNDLE = load_bundle(Settings().asset_bundle_dir)
CASES = load_test_cases(BUNDLE)


def test_the_bundle_has_test_cases() -> None:
    # A model just started with `grpc-model init` has none yet: `grpc-model test` fails on that, the author's
    # check; the framework's suite stays green whatever model sits in the project.
    if not CASES:
        pytest.skip(f"no functional test cases under {BUNDLE.test_cases_dir} yet (grpc-model test requires some)")


def test_every_case_through_the_wrapper() -> None:
    outcomes = run_cases_in_process(BUNDLE, CASES, USER_MODEL_CLASS)
    assert {outcome.name: outcome.problems for outcome in outcomes if not outcome.passed} == {}
    assert {case.name for case in CASES} <= {outcome.name for outcome in outcomes}


@pytest.mark.parametrize("batch_size", [1, 8])
def test_every_case_through_the_server(serve: ServerFactory, batch_size: int) -> None:
    server = serve(model_class=USER_MODEL_CLASS)
    assert server.client.status().status_code == 200
    problems = {case.name: check_test_case(server.client, case, batch_size) for case in CASES}
    assert problems == {case.name: [] for case in CASES}
