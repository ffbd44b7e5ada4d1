"""Shared fixtures: a clean environment, and real servers on loopback ports they chose."""

import asyncio
import contextlib
import fcntl
import functools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
import pytest
import yaml

from grpc_model.src.client import ModelClient
from grpc_model.src.server import RunningServer, start_server
from grpc_model.src.settings import ENV_PREFIX, PROJECT_ROOT, Settings, env_var
from grpc_model.tests.wrappers import GATE_DIR
from grpc_model.tests.wrappers import PATIENCE_SECONDS as PATIENCE_SECONDS  # the tests' bound on every wait

T = TypeVar("T")

# pytest-xdist's workers start with COLUMNS=80 in their environment. The CLI's consoles (rich), made when a test
# module imports the CLI, would keep that width for good and fold a long tmp_path mid-word, whatever COLUMNS a test
# gives the command it runs; without it they follow the test's, as in a run without workers.
os.environ.pop("COLUMNS", None)

# Read at import, before the environment cleaning below: the tests of *your* model
# (test_functional.py, test_packaging.py) serve the class you configured, as the server would.
USER_MODEL_CLASS = os.environ.get(env_var("model_class"), Settings.model_fields["model_class"].default)


# scripts/dev.sh test runs the modules on pytest-xdist workers (`--dist loadfile`: a module's tests on one worker, in
# order, so a module-scoped fixture is made once). These modules spend minutes waiting on other processes (a Ray
# cluster; a wheel, a virtual environment and a poetry install): handed out first (`--no-loadscope-reorder` keeps
# this order), they overlap the rest of the suite instead of ending the run alone.
LONG_WAITS = ("test_ray_serve.py", "test_project.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONG_WAITS)  # stable: the rest keep their order


@contextlib.contextmanager
def container_engine_turn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The container engine for the caller alone, across the run's workers (an exclusive lock on a file they share).

    The integration script names its containers and images `grpc-model-it-*`, and its test checks that none is
    left behind, which another image test on another worker would make meanwhile; and two podman builds at once
    can trip over each other's cache ("layer not known").
    """
    with (tmp_path_factory.getbasetemp().parent / "container-engine.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture
def container_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The container engine for this test alone: see container_engine_turn."""
    with container_engine_turn(tmp_path_factory):
        yield


def eventually(condition: Callable[[], T | None], what: str, seconds: float = PATIENCE_SECONDS) -> T:
    """Polls `condition` until it returns something true, and returns that; fails the test after `seconds`.

    How a test waits for another thread or process: a sleep followed by an assertion wins a race
    on an idle machine and loses it on a loaded one.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}")
        time.sleep(0.01)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Writes lone surrogates in a test's captured output as escapes (`\\udcff`).

    Some tests make the server log text that holds one (a model's exception message decoded with surrogateescape):
    a report that carries it cannot be encoded as UTF-8, which is how a pytest-xdist worker sends it to the run.
    """
    report = yield
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode()) for title, text in report.sections]
    return report


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps a developer's own server settings out of the tests."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name == "PSC_MODEL_PORT":
            monkeypatch.delenv(name)
    # HTTP is on wherever its group is installed, on one fixed port: the tests that test it ask for it.
    monkeypatch.setenv(env_var("http"), "off")


class ServerThread:
    """A real grpc.aio server on its own event loop in a background thread, bound to 127.0.0.1:0."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.thread.start()
        self.running: RunningServer = self.call(start_server(settings))
        self.client = ModelClient(f"127.0.0.1:{self.running.port}", timeout=30)

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.client.close()
        self.call(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


ServerFactory = Callable[..., ServerThread]


def wait_until_serving_again(server: ServerThread) -> None:
    """Calls until an item of the test bundle succeeds, then until health says SERVING again.

    Meanwhile only UNAVAILABLE is acceptable. Health is reported a moment after a worker can take
    calls again, so it is polled too rather than read once.
    """
    refusals: set[grpc.StatusCode] = set()
    deadline = time.monotonic() + PATIENCE_SECONDS
    while time.monotonic() < deadline:
        try:
            if server.client.run([{"a": b"fine"}]).outputs[0].success:
                break
        except grpc.RpcError as error:
            refusals.add(error.code())
        time.sleep(0.05)
    else:
        raise AssertionError(f"the server did not serve again within {PATIENCE_SECONDS:g} s")
    assert refusals <= {grpc.StatusCode.UNAVAILABLE}  # while no worker is up, calls fail fast
    assert server.client.wait_for_health("SERVING", PATIENCE_SECONDS) == "SERVING"


def loopback_settings(**overrides: Any) -> Settings:
    """A test server's settings: every port on loopback chosen by the OS, HTTP off, a short drain.

    For servers made outside `serve` (module-scoped fixtures run before the environment is cleaned):
    the defaults of metrics (9090) and HTTP (8080, where its group is installed) would collide with
    any other server on the machine.
    """
    defaults = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "http": "off", "http_port": 0}
    return Settings(**{**defaults, "shutdown_grace_seconds": 5, **overrides})


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """`serve(model_class=..., **settings)` starts a server; every one is stopped after the test."""
    servers: list[ServerThread] = []

    def start(**overrides: Any) -> ServerThread:
        servers.append(ServerThread(loopback_settings(**overrides)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gate(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A directory through which the test and wrappers in other processes signal each other (wrappers.GATE_DIR).

    Its teardown releases whatever a wrapper still waits for ("release" appears, "hold" goes), and runs
    before the servers stop (it depends on `serve`), so no server has to kill a held worker to stop.
    """
    directory = tmp_path_factory.mktemp("gate")
    monkeypatch.setenv(GATE_DIR, str(directory))
    yield directory
    (directory / "release").touch()
    (directory / "hold").unlink(missing_ok=True)


GREETER = Path(__file__).parent / "greeter"  # the greeter's model.yaml and test cases
TESTS = "grpc_model.tests.wrappers"


TEST_VERSION = "0.1.0"  # the greeter's version: the only bundle under the roots written below


def write_greeter_bundle(root: Path) -> Path:
    """The greeter's bundle, alone under `root`, so the server serves it."""
    shutil.copytree(GREETER, root / TEST_VERSION)
    return root


def write_newer_bundle(root: Path, version: str) -> Path:
    """A copy of the bundle `root/TEST_VERSION/` as `root/version/`, its model.yaml saying so."""
    shutil.copytree(root / TEST_VERSION, root / version)
    model_yaml = root / version / "model.yaml"
    model_yaml.write_text(re.sub(r"(?m)^version: .*$", f"version: {version}", model_yaml.read_text()))
    return root / version


@pytest.fixture(scope="session")
def greeter_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_greeter_bundle(tmp_path_factory.mktemp("greeter"))


def write_test_bundle(root: Path, **timeout: str) -> Path:
    """The greeter's bundle with one binary input `a`, which the test wrappers use, and the given timeouts."""
    spec = yaml.safe_load((GREETER / "model.yaml").read_text())
    spec["version"] = TEST_VERSION
    spec["inputs"] = {"a": {"acceptedMediaTypes": ["application/octet-stream"], "maxSize": "1M"}}
    spec["outputs"] = {"out": {"mediaType": "application/octet-stream", "maxSize": "1M"}}
    spec["timeout"].update(timeout)
    (root / TEST_VERSION).mkdir(parents=True)
    (root / TEST_VERSION / "model.yaml").write_text(yaml.safe_dump(spec))
    return root


@pytest.fixture(scope="session")
def test_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def serve_wrapper(serve: ServerFactory, test_bundle: Path) -> ServerFactory:
    """`serve_wrapper("Echo", **settings)` serves a wrapper of wrappers.py with the test bundle."""

    def start(name: str, **overrides: Any) -> ServerThread:
        return serve(**{"model_class": f"{TESTS}:{name}", "asset_bundle_dir": test_bundle, **overrides})

    return start


@pytest.fixture
def serve_greeter(serve_wrapper: ServerFactory, greeter_bundle: Path) -> ServerFactory:
    """`serve_greeter(**settings)` serves the greeter, a whole small model that the framework owns."""
    return functools.partial(serve_wrapper, "Greeter", asset_bundle_dir=greeter_bundle)


@pytest.fixture
def greeter_server(serve_greeter: ServerFactory) -> ServerThread:
    return serve_greeter()


def alive(pid: int) -> bool:
    """Whether a process (a worker the test expects to end) still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def copy_project(destination: Path) -> Path:
    """The project as a fresh clone has it, to change without touching the real one."""
    leave_out = shutil.ignore_patterns(".git", ".venv", ".tools", ".*_cache", ".hypothesis", "__pycache__")
    return Path(shutil.copytree(PROJECT_ROOT, destination, ignore=leave_out))


GREETER_MODULE = '''"""The framework's test model, the greeter, in place of the author's in a copy of the project."""

from grpc_model.tests.wrappers import Greeter


class GreeterModel(Greeter):
    """The one model class of this module, so the server serves it."""
'''

GREETER_UNIT_TEST = '''"""A unit test of the greeter, for `grpc-model test` to run."""

from model_lib.src.model import GreeterModel


def test_the_greeter_greets_the_last_word() -> None:
    output = GreeterModel().handle_single_input({"input.txt": b"I am Ada"}, detect_drift=False, explain=False)
    assert b"Ada" in output["results.json"]
'''


def copy_greeter_project(destination: Path) -> Path:
    """A copy of the project whose model is the greeter: what the author's commands do, tested whatever the
    author's own model is (a fresh `grpc-model init` has no test cases yet)."""
    project = copy_project(destination)
    shutil.rmtree(project / "asset_bundle")
    write_greeter_bundle(project / "asset_bundle")
    shutil.rmtree(project / "model_lib/tests")
    (project / "model_lib/tests").mkdir()
    (project / "model_lib/tests/__init__.py").write_text("")
    (project / "model_lib/tests/test_model.py").write_text(GREETER_UNIT_TEST)
    (project / "model_lib/src/model.py").write_text(GREETER_MODULE)
    return project


SERVING_LINE = re.compile(r"serving .* on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """A server in a child process, as users run it; its port is read from its "serving ... on" log line."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        stdout: IO[str] | None = None,
        cwd: Path = PROJECT_ROOT,
    ) -> None:
        self.lines: list[str] = []
        self.port_found = threading.Event()
        self.port = 0
        self.process = subprocess.Popen(
            [*(command or [sys.executable, "-m", "grpc_model.src.model_server"]), "--host", "127.0.0.1", *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            match = SERVING_LINE.search(line)
            if match:
                self.port = int(match.group(1))
                self.port_found.set()

    def client(self, seconds: float = PATIENCE_SECONDS) -> ModelClient:
        """A client, once the server says it serves (within `seconds`)."""
        assert self.port_found.wait(timeout=seconds), self.output()
        return ModelClient(f"127.0.0.1:{self.port}", timeout=30)

    def wait(self) -> int:
        code = self.process.wait(timeout=PATIENCE_SECONDS)
        self.reader.join(timeout=10)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def processes(monkeypatch: pytest.MonkeyPatch, greeter_bundle: Path) -> Iterator[list[ServerProcess]]:
    """Server processes started with `start`; each is killed, if still running, after the test.

    They serve the greeter unless their environment or flags say otherwise.
    """
    monkeypatch.setenv(env_var("model_class"), f"{TESTS}:Greeter")
    monkeypatch.setenv(env_var("asset_bundle_dir"), str(greeter_bundle))
    monkeypatch.setenv(env_var("metrics_port"), "0")  # 9090 may be taken; the tests read the port from the log
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.close()


def start(
    processes: list[ServerProcess],
    *args: str,
    port: int | None = 0,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    stdout: IO[str] | None = None,
    cwd: Path = PROJECT_ROOT,
) -> ServerProcess:
    port_args = [] if port is None else ["--port", str(port)]
    processes.append(ServerProcess([*port_args, *args], env=env, command=command, stdout=stdout, cwd=cwd))
    return processes[-1]
