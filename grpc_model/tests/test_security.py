"""Transport security: TLS, mutual TLS and bearer tokens, from the reference client and from grpclib
(a client on another HTTP/2 stack), with certificates the tests make themselves."""

import asyncio
import json
import logging
import socket
import ssl
import urllib.error
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from typer.testing import CliRunner

from grpc_model.src import model_client, model_server
from grpc_model.src.auto_generated.model2_template import model_pb2 as pb
from grpc_model.src.auto_generated.v2 import grpc_predict_v2_pb2 as v2
from grpc_model.src.auto_generated.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from grpc_model.src.cli import app
from grpc_model.src.client import ModelClient
from grpc_model.src.security.auth import AuthSetupError, RefusalLog, load_tokens
from grpc_model.src.security.channel import ClientSecurity, ClientSecurityError
from grpc_model.src.security.tls import TLSSetupError
from grpc_model.src.server import ListenError, start_server
from grpc_model.src.settings import Settings, env_var, flag
from grpc_model.tests.certificates import TestPKI, make_pki
from grpc_model.tests.conftest import ServerFactory, ServerProcess, ServerThread, start
from grpc_model.tests.grpclib_client import HELLO, grpclib_context, grpclib_run, grpclib_status
from grpc_model.tests.raw_h2_client import raw_unary_call

TOKEN = "s3cret-token-value"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: TestPKI, mutual: bool = False) -> dict[str, Any]:
    settings = {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key)}
    return {**settings, "tls_client_ca": str(pki.client_ca)} if mutual else settings


def client(server: ServerThread, **security: Any) -> ModelClient:
    return ModelClient(f"127.0.0.1:{server.running.port}", timeout=30, security=ClientSecurity(**security))


def refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


# TLS


def test_tls_serves_the_reference_client_and_refuses_plaintext(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls_settings(pki))

    with client(server, tls_ca=str(pki.server_ca)) as secure:
        assert secure.status().status_code == 200
        assert secure.run([HELLO]).outputs[0].success
        assert secure.health() == "SERVING"
    with client(server) as plaintext:
        assert refusal(plaintext.status).code() == grpc.StatusCode.UNAVAILABLE


def test_tls_serves_grpclib(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls_settings(pki))

    assert grpclib_status(server, context=grpclib_context(pki)).status_code == 200
    assert grpclib_run(server, context=grpclib_context(pki)).outputs[0].success


def test_a_client_that_does_not_trust_the_server_ca_is_refused(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls_settings(pki))

    with client(server, tls_ca=str(pki.client_ca)) as wrong_trust:
        assert refusal(wrong_trust.status).code() == grpc.StatusCode.UNAVAILABLE


# Mutual TLS


def test_mutual_tls_needs_a_client_certificate_from_the_reference_client(
    serve_greeter: ServerFactory, pki: TestPKI
) -> None:
    server = serve_greeter(**tls_settings(pki, mutual=True))

    with client(server, tls_ca=str(pki.server_ca)) as anonymous:
        assert refusal(anonymous.status).code() == grpc.StatusCode.UNAVAILABLE
    stranger = {"tls_cert": str(pki.stranger.cert), "tls_key": str(pki.stranger.key)}
    with client(server, tls_ca=str(pki.server_ca), **stranger) as unknown:
        assert refusal(unknown.status).code() == grpc.StatusCode.UNAVAILABLE
    known = {"tls_cert": str(pki.client.cert), "tls_key": str(pki.client.key)}
    with client(server, tls_ca=str(pki.server_ca), **known) as trusted:
        assert trusted.status().status_code == 200
        assert trusted.run([HELLO]).outputs[0].success


def test_mutual_tls_needs_a_client_certificate_from_grpclib(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls_settings(pki, mutual=True))

    for call in (grpclib_status, grpclib_run):
        with pytest.raises((OSError, StreamTerminatedError)):  # the handshake fails: ssl.SSLError is an OSError
            call(server, context=grpclib_context(pki))
        assert call(server, context=grpclib_context(pki, with_client_cert=True)).status_code == 200


# Bearer tokens


def test_tokens_from_the_reference_client(
    serve_greeter: ServerFactory, pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve_greeter(**tls_settings(pki), auth_token=TOKEN, load_model_at_startup=True)
    caplog.set_level(logging.DEBUG)

    with client(server, tls_ca=str(pki.server_ca)) as anonymous:
        missing = refusal(anonymous.status)
        assert anonymous.health() == "SERVING"  # health stays open, for probes
        reflection = reflection_pb2_grpc.ServerReflectionStub(anonymous.channel)
        listing = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        hidden = refusal(lambda: next(iter(reflection.ServerReflectionInfo(listing, timeout=30))))
    with client(server, tls_ca=str(pki.server_ca), token="not-" + TOKEN) as wrong:
        wrong_status, wrong_run = refusal(wrong.status), refusal(lambda: wrong.run([HELLO]))
    with client(server, tls_ca=str(pki.server_ca), token=TOKEN) as right:
        assert right.status().status_code == 200
        assert right.run([HELLO]).outputs[0].success

    assert missing.code() == hidden.code() == grpc.StatusCode.UNAUTHENTICATED  # reflection needs the token too
    assert "needs a bearer token: send 'authorization: Bearer <token>'" in str(missing.details())
    for error in (wrong_status, wrong_run):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "the bearer token is not valid"
    assert TOKEN not in caplog.text  # neither the right token nor the wrong one is ever logged


def test_tokens_from_grpclib(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls_settings(pki), auth_token=TOKEN)

    for call in (grpclib_status, grpclib_run):
        for metadata in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            with pytest.raises(GRPCError) as raised:
                call(server, context=grpclib_context(pki), metadata=metadata)
            assert raised.value.status == Status.UNAUTHENTICATED
            assert "wrong" not in str(raised.value.message)
        good = call(server, context=grpclib_context(pki), metadata={"authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200


def test_tokens_from_a_file_without_tls(serve_greeter: ServerFactory, tmp_path: Path) -> None:
    """Plaintext with tokens is for a TLS proxy in front; raw metadata shows the server's side of it."""
    (tmp_path / "tokens").write_text("# rotated monthly\nfirst-token\n\n  second-token  \n")
    server = serve_greeter(auth_tokens_file=str(tmp_path / "tokens"))
    status = server.client.channel.unary_unary(
        "/ModzyModel/Status", pb.StatusRequest.SerializeToString, pb.StatusResponse.FromString
    )

    assert status(pb.StatusRequest(), metadata=(("authorization", "Bearer second-token"),)).status_code == 200
    assert status(pb.StatusRequest(), metadata=(("authorization", "bearer first-token"),)).status_code == 200
    for metadata in ((("authorization", "Bearer # rotated monthly"),), (("authorization", "first-token"),)):
        assert refusal(lambda m=metadata: status(pb.StatusRequest(), metadata=m)).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_non_ascii_tokens_from_a_client_are_wrong_tokens(serve_greeter: ServerFactory) -> None:
    """gRPC libraries send ASCII only; a hand-written client sends raw UTF-8, which compare_digest refused as a str."""
    server = serve_greeter(auth_token=TOKEN, shutdown="token", shutdown_token=TOKEN, load_model_at_startup=True)
    port = server.running.port
    status, shutdown = pb.StatusRequest().SerializeToString(), pb.ShutdownRequest().SerializeToString()
    bearer = [(b"authorization", "Bearer s\u00e9cret".encode())]

    refused_status = raw_unary_call(port, "/ModzyModel/Status", status, bearer)
    code, answer = raw_unary_call(
        port,
        "/ModzyModel/Shutdown",
        shutdown,
        [(b"authorization", f"Bearer {TOKEN}".encode()), (b"shutdown-token", "s\u00e9cret".encode())],
    )

    assert refused_status[0] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert code == grpc.StatusCode.OK.value[0]
    assert pb.ShutdownResponse.FromString(answer).status_code == 403  # as for a wrong token
    assert server.client.health() == "SERVING"


def test_the_reference_client_sends_tokens_over_tls_only() -> None:
    with pytest.raises(ClientSecurityError, match="sent over TLS only"):
        ModelClient("127.0.0.1:1", security=ClientSecurity(token=TOKEN))
    with pytest.raises(ClientSecurityError, match="--tls-cert and --tls-key go together"):
        ModelClient("127.0.0.1:1", security=ClientSecurity(tls_cert="client.pem"))


# Start-up errors name the setting and the file


def start_error(**settings: Any) -> str:
    with pytest.raises((TLSSetupError, AuthSetupError)) as raised:
        asyncio.run(start_server(Settings(host="127.0.0.1", port=0, **settings)))
    return str(raised.value)


def test_tls_files_that_are_missing_or_wrong_stop_the_start(pki: TestPKI, greeter_bundle: Path, tmp_path: Path) -> None:
    bundle = {"model_class": "grpc_model.tests.wrappers:Greeter", "asset_bundle_dir": greeter_bundle}
    (tmp_path / "notes.txt").write_text("not a certificate")
    missing = str(tmp_path / "missing.pem")

    assert "tls_cert: cannot read " + missing in start_error(**bundle, tls_cert=missing, tls_key=str(pki.server.key))
    assert "GRPC_MODEL_TLS_CERT" in start_error(**bundle, tls_cert=missing, tls_key=str(pki.server.key))
    assert f"tls_key: {tmp_path / 'notes.txt'} is not a PEM file" in start_error(
        **bundle, tls_cert=str(pki.server.cert), tls_key=str(tmp_path / "notes.txt")
    )
    mismatch = start_error(**bundle, tls_cert=str(pki.server.cert), tls_key=str(pki.client.key))
    assert f"tls_cert {pki.server.cert} and tls_key {pki.client.key} do not make a certificate and its key" in mismatch
    assert "tls_client_ca: cannot read" in start_error(**bundle, **tls_settings(pki), tls_client_ca=missing)
    assert f"auth_tokens_file: cannot read {missing}" in start_error(**bundle, auth_tokens_file=missing)
    with pytest.raises(ValueError, match="tls_cert is set but tls_key is empty"):
        Settings(tls_cert=str(pki.server.cert))
    with pytest.raises(ValueError, match="tls_client_ca is set but tls_cert is empty"):
        Settings(tls_client_ca=str(pki.client_ca))


def test_settings_errors_never_show_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert model_server.main(["--tls-cert", "server.pem", "--auth-token", TOKEN, "--shutdown-token", TOKEN]) == 2
    across = capsys.readouterr().err  # pydantic's own text would list every input here
    assert model_server.main(["--auth-token", TOKEN, "--port", "99999"]) == 2
    one = capsys.readouterr().err

    assert "tls_cert is set but tls_key is empty" in across
    assert "port: must be between 0 and 65535 (a TCP port number; 0 picks a free one) (got '99999')" in one
    assert TOKEN not in across + one
    assert TOKEN not in repr(ClientSecurity(tls=True, token=TOKEN))


@pytest.mark.parametrize("field", ["shutdown_token", "auth_token"])
@pytest.mark.parametrize("token", ["s\u00e9cret-value", "tab\tinside", "tr\u00e8s-secret"])
def test_a_token_no_client_can_send_stops_the_start(field: str, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    """gRPC metadata carries printable ASCII only: a server token outside it would refuse every call."""
    assert model_server.main(["--shutdown", "token", "--shutdown-token", TOKEN, flag(field), token]) == 2  # last wins
    error = capsys.readouterr().err
    assert f"{field}: " in error
    assert "printable ASCII" in error
    assert token not in error


def test_a_tokens_file_line_no_client_can_send_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("good-token\nt\u00f6ken\n", encoding="utf-8")
    with pytest.raises(AuthSetupError, match="tokens line 2 must be printable ASCII") as raised:
        load_tokens(Settings(auth_tokens_file=str(tmp_path / "tokens")))
    assert "t\u00f6ken" not in str(raised.value)


def test_the_server_process_names_the_tls_file_it_cannot_read(
    processes: list[ServerProcess], pki: TestPKI, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.key"
    server = start(processes, "--tls-cert", str(pki.server.cert), "--tls-key", str(missing))
    assert server.wait() == 2
    assert f"cannot start: tls_key: cannot read {missing}: No such file or directory" in server.output()


# Probes: a plaintext health port, and the image's HEALTHCHECK command


def test_a_plaintext_health_port_answers_probes_of_a_tls_server(
    serve_greeter: ServerFactory, pki: TestPKI, monkeypatch: pytest.MonkeyPatch, unused_port: int
) -> None:
    server = serve_greeter(**tls_settings(pki), auth_token=TOKEN, health_port=unused_port, load_model_at_startup=True)

    with ModelClient(f"127.0.0.1:{unused_port}", timeout=30) as probe:
        assert probe.health() == "SERVING"
        assert refusal(probe.status).code() == grpc.StatusCode.UNIMPLEMENTED  # health only
    monkeypatch.setenv("GRPC_MODEL_HEALTH_PORT", str(unused_port))
    assert model_client.main(["--health", "--local", "--timeout", "10"]) == 0
    monkeypatch.delenv("GRPC_MODEL_HEALTH_PORT")
    monkeypatch.setenv("GRPC_MODEL_PORT", str(server.running.port))
    assert model_client.main(["--health", "--local", "--timeout", "2"]) == 1  # plaintext to a TLS port
    monkeypatch.setenv("GRPC_MODEL_CLIENT_TLS_CA", str(pki.server_ca))
    assert model_client.main(["--health", "--local", "--timeout", "10"]) == 0


def test_a_health_port_in_use_is_named(greeter_bundle: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(
            host="127.0.0.1",
            port=0,
            health_port=port,
            model_class="grpc_model.tests.wrappers:Greeter",
            asset_bundle_dir=greeter_bundle,
        )
        named = f"health_port: cannot listen on 127.0.0.1:{port}: .*GRPC_MODEL_HEALTH_PORT"
        with pytest.raises(ListenError, match=named):
            asyncio.run(start_server(settings))


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The command line


def test_cli_commands_speak_tls_and_tokens(
    serve_greeter: ServerFactory, greeter_bundle: Path, pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve_greeter(**tls_settings(pki, mutual=True), auth_token=TOKEN)
    target = f"127.0.0.1:{server.running.port}"
    (tmp_path / "hello.txt").write_text("My name is Ada")
    security = ["--tls-ca", str(pki.server_ca), "--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key)]
    runner = CliRunner()

    monkeypatch.setenv("GRPC_MODEL_TOKEN", TOKEN)
    status = runner.invoke(app, ["status", target, *security])
    call = runner.invoke(app, ["call", target, "--input", f"input.txt={tmp_path / 'hello.txt'}", *security])
    (tmp_path / "items").mkdir()
    for name in ("ada", "bo"):
        (tmp_path / "items" / f"{name}.txt").write_text(f"My name is {name}")
    out = tmp_path / "results.jsonl"
    score = runner.invoke(app, ["score", str(tmp_path / "items"), "--out", str(out), "--server", target, *security])
    monkeypatch.delenv("GRPC_MODEL_TOKEN")
    no_token = runner.invoke(app, ["status", target, *security])
    no_key = runner.invoke(app, ["status", target, "--tls-cert", str(pki.client.cert)])
    port = str(server.running.port)
    monkeypatch.setenv(env_var("asset_bundle_dir"), str(greeter_bundle))  # the served model's cases, not the author's
    reference = model_client.main(["--host", "127.0.0.1", "--port", port, "--token", TOKEN, *security])

    assert status.exit_code == 0, status.output
    assert "SERVING" in status.output
    assert call.exit_code == 0, call.output
    assert "success" in call.output
    assert "Ada" in call.output
    assert score.exit_code == 0, score.output
    assert len(out.read_text().splitlines()) == 2
    assert no_token.exit_code == 1
    assert "UNAUTHENTICATED" in no_token.output
    assert no_key.exit_code == 2
    assert "--tls-cert and --tls-key go together" in no_key.output
    assert reference == 0  # every bundled test case passes over mutual TLS with a token


def test_tokens_cover_v2_on_the_grpc_port(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    server = serve_greeter(**tls_settings(pki), auth_token=TOKEN)
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="input.txt", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[b"Ada"])
    )
    request = v2.ModelInferRequest(model_name="hello-world", inputs=[tensor])

    with client(server, tls_ca=str(pki.server_ca)) as anonymous:
        refused = refusal(lambda: GRPCInferenceServiceStub(anonymous.channel).ModelInfer(request, timeout=30))
    with client(server, tls_ca=str(pki.server_ca), token=TOKEN) as right:
        answer = GRPCInferenceServiceStub(right.channel).ModelInfer(request, timeout=30)

    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert [output.name for output in answer.outputs] == ["results.json"]


def test_the_http_port_has_the_grpc_ports_tls_and_tokens(serve_greeter: ServerFactory, pki: TestPKI) -> None:
    pytest.importorskip("fastapi", reason="the optional `http` extra is not installed")
    from grpc_model.tests.http_client import HTTP, post_form, request

    server = serve_greeter(**tls_settings(pki), auth_token=TOKEN, **HTTP)
    assert server.running.http is not None
    base = f"127.0.0.1:{server.running.http.port}"
    trusted = ssl.create_default_context(cafile=str(pki.server_ca))
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    with pytest.raises((ConnectionError, urllib.error.URLError)):  # plaintext gets no answer from HTTPS
        request(f"http://{base}/v2/health/live")
    assert request(f"https://{base}/v2/health/live", context=trusted)[0] == 200  # health stays open, for probes
    for path in ("/api/model", "/v2/models/hello-world", "/"):
        status, headers, body = request(f"https://{base}{path}", context=trusted)
        assert (status, headers["www-authenticate"]) == (401, "Bearer"), path
        assert "needs a bearer token" in json.loads(body)["detail"]
    infer = f"https://{base}/v2/models/hello-world/infer"  # answered outside FastAPI's routing: refused all the same
    status, headers, body = request(infer, "POST", b'{"inputs": []}', context=trusted)
    assert (status, headers["www-authenticate"]) == (401, "Bearer")
    assert "needs a bearer token" in json.loads(body)["detail"]
    run = f"https://{base}/api/model/run"
    wrong = post_form(run, {"input.txt": b"Ada"}, None, {"Authorization": "Bearer x"}, context=trusted)
    right = post_form(run, {"input.txt": b"Ada"}, None, bearer, context=trusted)

    assert wrong == (401, {"detail": "the bearer token is not valid"})
    assert right[0] == 200
    assert right[1]["success"] is True


def test_refused_calls_are_logged_once_a_window_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    """A client retrying a wrong token in a loop writes one line a window, not one a call."""
    now = [0.0]
    log = RefusalLog(window_seconds=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="grpc_model.src.security.auth"):
        for _ in range(500):
            log.refused("/ModzyModel/Run", "the bearer token is not valid")
        now[0] = 59.9
        log.refused("/ModzyModel/Run", "the bearer token is not valid")
        first = [record.getMessage() for record in caplog.records]
        now[0] = 60.0
        log.refused("/ModzyModel/Status", "the bearer token is not valid")
    lines = [record.getMessage() for record in caplog.records]
    assert first == ["/ModzyModel/Run refused: the bearer token is not valid"]
    assert lines[1:] == [
        "/ModzyModel/Status refused: the bearer token is not valid (500 more refused since the last line)"
    ]
