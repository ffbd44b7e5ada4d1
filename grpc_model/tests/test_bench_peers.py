"""The peer comparison's own parts (benchmarks/): the REST driver, the arithmetic of a row, the process handling.

Nothing here measures anything: the HTTP server is a tiny aiohttp app in this process, the servers
are `python -c` one-liners, and no assertion is about time.
"""

import ast
import asyncio
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

from benchmarks import mlserver
from benchmarks.http_load import Check, json_caller
from benchmarks.load import Call, Load
from benchmarks.peers import bentoml, litserve, run
from benchmarks.peers.calls import PAYLOAD, answered, v2_answered
from benchmarks.peers.profiles import PROFILES, burn_cpu_source
from benchmarks.peers.table import PeerResults, Row, markdown
from benchmarks.processes import RUNNING, Launched, Usage, stop_all
from benchmarks.report import Point, fill
from grpc_model.tests.conftest import eventually

# ---- the REST driver --------------------------------------------------------------------------


class Echoes:
    """A JSON echo on 127.0.0.1 that remembers each request's client port: one port, one connection."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    async def echo(self, request: web.Request) -> web.Response:
        self.ports.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        body = await request.json()
        return web.json_response({"output": body["input"]})

    async def fail(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "no"}, status=500)

    async def text(self, request: web.Request) -> web.Response:
        return web.Response(text="not json")

    async def drop(self, request: web.Request) -> web.Response:
        request.transport.close()  # type: ignore[union-attr]
        raise ConnectionResetError


async def serving(echoes: Echoes) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/echo", echoes.echo)
    app.router.add_post("/fail", echoes.fail)
    app.router.add_post("/text", echoes.text)
    app.router.add_post("/drop", echoes.drop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def calls_in_turn(call: Call, callers: int, each: int) -> list[bool]:
    """`callers` concurrent callers making `each` calls one after the other, as load.drive's callers do."""

    async def caller() -> list[bool]:
        return [await call() for _ in range(each)]

    return [ok for answers in await asyncio.gather(*(caller() for _ in range(callers))) for ok in answers]


def test_each_concurrent_caller_keeps_one_connection_alive() -> None:
    async def scenario() -> tuple[list[bool], list[int]]:
        echoes = Echoes()
        runner, url = await serving(echoes)
        try:
            async with json_caller(f"{url}/echo", {"input": PAYLOAD}, answered, concurrency=4) as call:
                answers = await calls_in_turn(call, callers=4, each=5)
        finally:
            await runner.cleanup()
        return answers, echoes.ports

    answers, ports = asyncio.run(scenario())
    assert answers == [True] * 20
    assert len(ports) == 20
    assert len(set(ports)) <= 4, f"20 calls from 4 callers opened {len(set(ports))} connections"


@pytest.mark.parametrize("path", ["fail", "text", "drop"])
def test_a_bad_answer_or_a_broken_connection_is_an_error_not_a_crash(path: str) -> None:
    async def scenario() -> list[bool]:
        runner, url = await serving(Echoes())
        try:
            async with json_caller(f"{url}/{path}", {"input": PAYLOAD}, answered, concurrency=2) as call:
                return await calls_in_turn(call, callers=2, each=2)
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == [False] * 4


def test_an_answer_that_fails_the_check_is_an_error() -> None:
    async def scenario() -> list[bool]:
        runner, url = await serving(Echoes())
        try:
            async with json_caller(f"{url}/echo", {"input": "other"}, answered, concurrency=1) as call:
                return await calls_in_turn(call, callers=1, each=1)
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == [False]


@pytest.mark.parametrize(
    ("check", "answer", "expected"),
    [
        (answered, {"output": PAYLOAD}, True),
        (answered, {"output": "other"}, False),
        (answered, [PAYLOAD], False),
        (v2_answered, {"outputs": [{"name": "output.bin"}]}, True),
        (v2_answered, {"error": "no such model"}, False),
        (v2_answered, {"outputs": None}, False),
        (v2_answered, "text", False),
    ],
)
def test_an_unexpected_answer_is_a_failed_call_not_an_exception(check: Check, answer: object, expected: bool) -> None:
    assert check(answer) is expected


# ---- a row's arithmetic -----------------------------------------------------------------------


def test_a_point_is_filled_from_the_window_of_calls() -> None:
    load = Load(latencies=[0.001 * n for n in range(1, 101)], errors=3, seconds=2.0)
    point = Point("echo", "x", 8)
    fill(point, load, Usage(cpu_seconds=0.05, peak_rss_mb=12.34, peak_pss_mb=5.0), batch=4)
    assert (point.requests, point.errors, point.requests_per_s, point.items_per_s) == (100, 3, 50.0, 200.0)
    assert (point.p50_ms, point.p99_ms) == (51.0, 100.0)
    assert point.cpu_us_per_request == 500.0  # 0.05 s over 100 calls
    assert point.peak_rss_mb == 12.3


def test_a_window_without_a_finished_call_leaves_a_point_of_zeros() -> None:
    point = Point("echo", "x", 8)
    fill(point, Load(latencies=[], errors=0, seconds=2.0), Usage(cpu_seconds=0.05))
    assert (point.requests, point.requests_per_s, point.p99_ms, point.cpu_us_per_request) == (0, 0.0, 0.0, 0.0)


def test_the_table_has_a_cell_under_each_column() -> None:
    point = Point("device", "grpc-model V2 REST lean", 64, requests=10, requests_per_s=5.0, items_per_s=5.0)
    results = PeerResults(machine={}, rows=[Row("grpc-model", "V2 REST", "lean", point, 70.04, 0.456)])
    header, rule, line = markdown(results).splitlines()
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert len(cells) == len(header.strip("|").split("|")) == len(rule.strip("|").split("|"))
    assert cells[:6] == ["device", "grpc-model", "V2 REST", "lean", "64", "5.0"]
    assert cells[-3:] == ["70.0", "0.46", "0"]


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SystemExit, match="unknown peer: Triton \\(known: grpc-model, MLServer, LitServe, BentoML\\)"):
        run.choose("LitServe,Triton", run.PEERS, "peer")
    assert run.choose(None, PROFILES, "profile") == list(PROFILES)


# ---- the peers' model code --------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "lean"])
def test_every_peer_source_is_python(variant: str) -> None:
    """The model files are format strings filled at run time: a stray brace would only show on a real run."""
    sources = [bentoml.source(variant, 1000), mlserver.runtime_source(1000)]
    sources += [litserve.source(profile, variant, 1000) for profile in litserve.PROFILES]
    for source in sources:
        ast.parse(source)


def test_peers_burn_the_same_loop_as_ours() -> None:
    namespace: dict[str, object] = {}
    exec(burn_cpu_source(1000), namespace)
    assert namespace["burn_cpu"]() == sum(range(1000))  # type: ignore[operator]


# ---- processes --------------------------------------------------------------------------------

# Starts a child that outlives nothing on its own, writes both pids, then waits to be stopped.
PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_stopping_a_server_stops_the_children_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    server = Launched([sys.executable, "-c", PARENT, str(pids)], "test-parent", pids.exists, timeout=120)
    parent, child = (int(pid) for pid in pids.read_text().split())
    assert server.cold_start_s > 0
    assert server in RUNNING
    server.stop()
    assert server not in RUNNING
    assert not alive(parent)
    eventually(lambda: not alive(child), "the child to be stopped with its parent")


def test_stop_all_stops_what_an_error_left_running(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    server = Launched([sys.executable, "-c", PARENT, str(pids)], "test-left", pids.exists, timeout=120)
    stop_all()
    assert not RUNNING
    assert server.process.poll() is not None


def test_a_server_that_exits_before_it_is_ready_is_an_error_naming_its_log() -> None:
    with pytest.raises(RuntimeError, match=r"test-exits exited with code 3; see .*test-exits\.log"):
        Launched([sys.executable, "-c", "raise SystemExit(3)"], "test-exits", lambda: False)
    assert not RUNNING
