"""The model on Ray Serve: the bundle's test cases through Ray's gRPC proxy, from clients outside Ray.

Ray runs in a private network and PID namespace (ray_cluster.py); the work happens in
ray_driver.py inside it, and this test judges the JSON it writes.
"""

import importlib
import importlib.util
import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from grpc_model.src.settings import PROJECT_ROOT, Settings
from grpc_model.tests.ray_cluster import in_namespace, namespace_problem

RAY_MISSING = importlib.util.find_spec("ray") is None
NO_RAY = "needs the `ray` extra (scripts/dev.sh install --add ray)"
needs_ray = pytest.mark.skipif(RAY_MISSING, reason=NO_RAY)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if RAY_MISSING:
        pytest.skip(NO_RAY)
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    result = tmp_path_factory.mktemp("ray") / "result.json"
    command = in_namespace([sys.executable, "-m", "grpc_model.tests.ray_driver", str(result)])
    # The namespace's processes all end when its first one does, so the timeout leaves nothing behind.
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.read_text())
    return answer


def test_every_test_case_passes_through_rays_proxy_for_the_reference_client(ray_run: dict[str, Any]) -> None:
    assert "status" in ray_run, ray_run["log_tail"]  # the app came up and answered
    assert ray_run["status"] == [200, "Model is loaded.", ray_run["version"]]
    assert ray_run["reference"] == {name: [] for name in ray_run["cases"]}  # each case 3 times in one call


def test_grpc_model_test_passes_every_case_against_rays_proxy(ray_run: dict[str, Any]) -> None:
    code, output = ray_run["cli"]
    assert code == 0, output
    assert f"all {len(ray_run['cases']) + 3} passed" in output  # unit tests, metadata, Status, then each case


def test_a_client_on_another_grpc_stack_passes_every_case(ray_run: dict[str, Any]) -> None:
    assert ray_run["grpclib"] == {"status": 200, "problems": {name: [] for name in ray_run["cases"]}}


def test_a_bad_item_fails_alone_with_the_frameworks_message_and_no_ray_traceback(ray_run: dict[str, Any]) -> None:
    (good, _), (bad, error) = ray_run["mixed"]
    assert good is True
    assert bad is False
    assert error.startswith("undeclared.bin: not an input of this model")
    assert "Traceback" not in error


def test_whole_call_refusals_keep_their_grpc_code_and_message(ray_run: dict[str, Any]) -> None:
    code, details = ray_run["overfull"]
    assert code == "RESOURCE_EXHAUSTED"
    assert details.startswith("this call has 5 items, more than the server queues at once (4)")
    assert "Traceback" not in details


def test_shutdown_is_refused_and_the_model_keeps_serving(ray_run: dict[str, Any]) -> None:
    assert ray_run["shutdown"] == [403, 200]


def test_the_command_stops_cleanly_on_sigterm(ray_run: dict[str, Any]) -> None:
    assert ray_run["exit_code"] == 0, ray_run["log_tail"]


@needs_ray
def test_replicas_autoscaling_and_resources_come_from_settings_and_model_yaml() -> None:
    from grpc_model.src.metadata import ModelSpec, load_bundle
    from grpc_model.src.ray_serve.deployment import deployment_options

    model_yaml = yaml.safe_load((load_bundle(PROJECT_ROOT / "asset_bundle").path / "model.yaml").read_text())
    model_yaml["resources"].update(cpu={"count": 0.5}, gpu={"count": 2})
    spec = ModelSpec.model_validate(model_yaml)
    fixed = deployment_options(Settings(ray_replicas=3), spec)
    assert fixed["num_replicas"] == 3
    assert "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 2}
    scaling = deployment_options(Settings(ray_replicas=2, ray_max_replicas=6, ray_target_ongoing_requests=8), spec)
    assert "num_replicas" not in scaling
    assert scaling["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 8}


def test_max_replicas_below_replicas_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"ray_max_replicas \(1\) is below ray_replicas \(2\)"):
        Settings(ray_replicas=2, ray_max_replicas=1)


@needs_ray
def test_the_serve_deploy_config_is_valid_and_builds_the_app() -> None:
    """deploy/ray/serve.yaml against Ray's own schema; its import path and args build the application."""
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from grpc_model.src.ray_serve import SERVICER_FUNCTION

    config = ServeDeploySchema.model_validate(yaml.safe_load((PROJECT_ROOT / "deploy/ray/serve.yaml").read_text()))
    assert config.grpc_options.grpc_servicer_functions == [SERVICER_FUNCTION]
    (application,) = config.applications
    module, _, name = application.import_path.partition(":")
    app = getattr(importlib.import_module(module), name)(application.args)
    assert isinstance(app, Application)
