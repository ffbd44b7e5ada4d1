"""`grpc-model test`: the author's checks, and only theirs.

The model's unit tests (`model_lib/tests`), then the bundle's functional test cases through
the wrapper in this process, through a running server, or through the built image. The
framework's own tests are not run: they belong to `scripts/dev.sh test`.
"""

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from grpc_model.src.cli.author.engine import CONTAINER_SCRIPTS, EngineError, engine_environment
from grpc_model.src.client import DEFAULT_MODEL, PLAINTEXT, ModelClient, ModelRoute, TargetError, check_test_case
from grpc_model.src.metadata import AssetBundle, TestCase
from grpc_model.src.runtime.items import describe, process_items
from grpc_model.src.runtime.loader import LoadedModel
from grpc_model.src.runtimes import model_source
from grpc_model.src.security.channel import ClientSecurity
from grpc_model.src.validation import InputValidator

NO_TESTS_COLLECTED = 5  # pytest's exit code


@dataclass
class Outcome:
    """One line of the report, and one <testcase> of the JUnit file."""

    name: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Suite:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(outcome.passed for outcome in self.outcomes)


def run_unit_tests(root: Path, junit: Path | None) -> Outcome:
    """pytest over `model_lib/tests`, its output shown as it runs; no tests there is not a failure."""
    started = time.monotonic()
    tests = root / "model_lib" / "tests"
    if not tests.is_dir():
        return Outcome("model_lib/tests", note="no model_lib/tests directory")
    command = [sys.executable, "-m", "pytest", str(tests.relative_to(root)), "-q", "-p", "no:cacheprovider"]
    if junit is not None:
        command.append(f"--junit-xml={junit}")
    code = subprocess.run(command, cwd=root, check=False).returncode
    problems = [] if code in (0, NO_TESTS_COLLECTED) else [f"pytest model_lib/tests exited with {code}"]
    note = "no unit tests collected" if code == NO_TESTS_COLLECTED else ""
    return Outcome("model_lib/tests", problems, time.monotonic() - started, note)


def run_cases_in_process(bundle: AssetBundle, cases: list[TestCase], model_class: str) -> list[Outcome]:
    """Each case through the wrapper's single-item method (or the runtime model.yaml names), then those that
    passed in one batch call."""
    started = time.monotonic()
    try:
        source = model_source(bundle, model_class)
        model = source.load()
    except BaseException as error:  # the author's __init__ may raise anything, SystemExit included
        return [Outcome("loading the model", [f"{model_class} failed to load: {describe(error)}"])]
    note = f"runtime {bundle.spec.runtime.kind}: {bundle.spec.runtime.file}" if bundle.spec.runtime else ""
    outcomes = [Outcome("loading the model", seconds=time.monotonic() - started, note=note)]
    validator = InputValidator(bundle.spec)
    for case in cases:
        started = time.monotonic()
        _, rejected = validator.check(case.inputs)
        if rejected is not None:
            problems = [f"the server would reject its inputs: {rejected}"]
        else:
            result = process_items(model, [case.inputs], case.detect_drift, case.explain)[0]
            problems = case.differences(result.output) if result.success else [_error_of(result.output)]
        outcomes.append(Outcome(case.name, problems, time.monotonic() - started))
    passed = {outcome.name for outcome in outcomes if outcome.passed}
    if model.batch is not None and cases:  # a failed case is reported once, by its own outcome above
        outcomes += _batch_outcomes(model, [case for case in cases if case.name in passed])
    return outcomes


def _batch_outcomes(model: LoadedModel, cases: list[TestCase]) -> list[Outcome]:
    """The batch method gets the cases of each flag setting in one call, as the server would batch them."""
    assert model.batch is not None
    outcomes = []
    for flags in sorted({(case.detect_drift, case.explain) for case in cases}):
        group = [case for case in cases if (case.detect_drift, case.explain) == flags]
        name = f"{len(group)} case(s) in one handle_input_batch call" + (
            f" (detect_drift={flags[0]}, explain={flags[1]})" if any(flags) else ""
        )
        started = time.monotonic()
        try:
            outputs = model.batch([case.inputs for case in group], *flags)
        except NotImplementedError:
            continue  # the base class's stub: the model has no batch method after all
        except BaseException as error:
            outcomes.append(Outcome(name, [f"handle_input_batch raised {describe(error)}"]))
            continue
        if not isinstance(outputs, list | tuple) or len(outputs) != len(group):
            count = len(outputs) if isinstance(outputs, list | tuple) else type(outputs).__name__
            problems = [f"handle_input_batch returned {count} outputs for {len(group)} inputs"]
        else:
            problems = [
                f"{case.name}: {problem}"
                for case, output in zip(group, outputs, strict=True)
                for problem in (case.differences(output) if isinstance(output, dict) else [f"returned {output!r}"])
            ]
        outcomes.append(Outcome(name, problems, time.monotonic() - started))
    return outcomes


def run_cases_on_server(
    bundle: AssetBundle,
    cases: list[TestCase],
    servers: list[str],
    timeout: float,
    security: ClientSecurity = PLAINTEXT,
    route: ModelRoute = DEFAULT_MODEL,
) -> list[Outcome]:
    """Each server's Status of the routed model (which loads a model that loads on demand), then each case as
    one Run call, round robin over the servers."""
    outcomes = [_status_outcome(bundle, server, timeout, security, route) for server in servers]
    if not all(outcome.passed for outcome in outcomes):
        return outcomes
    try:
        client = ModelClient(servers, timeout=timeout, security=security, route=route)
    except TargetError as error:
        return [*outcomes, Outcome("the servers' addresses", [str(error)])]
    with client:
        for case in cases:
            started = time.monotonic()
            try:
                problems = check_test_case(client, case)
            except grpc.RpcError as error:
                problems = [f"Run failed: {error.code().name}: {error.details()}"]
            outcomes.append(Outcome(case.name, problems, time.monotonic() - started))
    return outcomes


def _status_outcome(
    bundle: AssetBundle, server: str, timeout: float, security: ClientSecurity, route: ModelRoute
) -> Outcome:
    """The routed model's Status: loaded, and the model and version whose cases these are (a server of several
    models answers for its default model unless the route names one)."""
    started = time.monotonic()
    name = f"Status of {server}" + ("" if route == DEFAULT_MODEL else f" ({route})")
    with ModelClient(server, timeout=timeout, security=security, route=route) as client:
        try:
            status = client.status()
        except grpc.RpcError as error:
            return Outcome(name, [f"{error.code().name}: {error.details()}"])
    problems = [] if status.status_code == 200 else [f"Status answered {status.status_code}: {status.message}"]
    served = status.model_info
    if served.model_name != bundle.spec.name:
        problems.append(
            f"the server answers for model {served.model_name!r}, the cases are those of {bundle.spec.name!r}"
        )
    elif served.model_version != bundle.version:
        hint = f" (--model-version {bundle.version} asks for theirs)" if route.name and not route.version else ""
        problems.append(
            f"the server serves version {served.model_version}, the cases are those of {bundle.version}{hint}"
        )
    return Outcome(name, problems, time.monotonic() - started)


def run_image(root: Path) -> Outcome:
    """Builds the project's image and tests it in a container with the integration test that ships in the
    framework's package (a container engine is set up first where `container_engine.sh` can)."""
    started = time.monotonic()
    try:
        env = engine_environment()
    except EngineError as error:
        return Outcome("image", [str(error)])
    env.update(INTEGRATION_MODE="docker", PYTHON=sys.executable, PROJECT_DIR=str(root))
    script = subprocess.run(["bash", str(CONTAINER_SCRIPTS / "integration_test.sh")], env=env, check=False)
    problems = [] if script.returncode == 0 else [f"the image test failed (exit {script.returncode}); see above"]
    return Outcome("the image, built and run in a container", problems, time.monotonic() - started)


def _error_of(output: dict[str, bytes]) -> str:
    return "the model failed: " + output.get("error", b"").decode("utf-8", "replace")


def write_junit(path: Path, suites: list[Suite], unit_junit: Path | None) -> None:
    """One JUnit file: pytest's suites for the unit tests, then one suite per step of ours."""
    root = ET.Element("testsuites")
    if unit_junit is not None and unit_junit.exists():
        parsed = ET.parse(unit_junit).getroot()
        root.extend(parsed if parsed.tag == "testsuites" else [parsed])
    for suite in suites:
        failures = sum(not outcome.passed for outcome in suite.outcomes)
        element = ET.SubElement(
            root,
            "testsuite",
            name=suite.name,
            tests=str(len(suite.outcomes)),
            failures=str(failures),
            errors="0",
            time=f"{sum(o.seconds for o in suite.outcomes):.3f}",
        )
        for outcome in suite.outcomes:
            case = ET.SubElement(
                element, "testcase", classname=suite.name, name=outcome.name, time=f"{outcome.seconds:.3f}"
            )
            if not outcome.passed:
                failure = ET.SubElement(case, "failure", message=outcome.problems[0][:200])
                failure.text = "\n".join(outcome.problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
