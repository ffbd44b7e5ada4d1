"""The options of every command that calls a server (status, call, test --server, score): transport security,
with `client_security`, which checks what they name before a call goes out; and the model the calls are for, with
`model_route`.

Each falls back to its environment variable when not given (security/channel.py), so a script can
set them once. Nothing here imports gRPC: `grpc-model version` stays quick.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from grpc_model.src.cli.output import USAGE, fail

if TYPE_CHECKING:
    from grpc_model.src.client import ModelRoute
    from grpc_model.src.security.channel import ClientSecurity

PANEL = "Transport security"
ROUTE_PANEL = "Model (a server of several models)"

Tls = Annotated[
    bool, typer.Option("--tls", help="Speak TLS, trusting the system's root certificates.", rich_help_panel=PANEL)
]
TlsCa = Annotated[
    str | None,
    typer.Option(
        metavar="PEM", help="Speak TLS, trusting this CA file ($GRPC_MODEL_CLIENT_TLS_CA).", rich_help_panel=PANEL
    ),
]
TlsCert = Annotated[
    str | None,
    typer.Option(
        metavar="PEM",
        help="Client certificate for mutual TLS ($GRPC_MODEL_CLIENT_TLS_CERT).",
        rich_help_panel=PANEL,
    ),
]
TlsKey = Annotated[
    str | None,
    typer.Option(metavar="PEM", help="Its private key ($GRPC_MODEL_CLIENT_TLS_KEY).", rich_help_panel=PANEL),
]
TlsServerName = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="The name in the server's certificate, when not the host ($GRPC_MODEL_CLIENT_TLS_SERVER_NAME).",
        rich_help_panel=PANEL,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        help="Bearer token for a server that requires one; needs TLS ($GRPC_MODEL_TOKEN).", rich_help_panel=PANEL
    ),
]


@dataclass(frozen=True)
class SecurityOptions:
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    token: str | None = None

    def resolve(self) -> "ClientSecurity":
        """The options over their environment variables."""
        from grpc_model.src.security.channel import ClientSecurity

        return ClientSecurity.from_env(
            self.tls,
            tls_ca=self.tls_ca,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            tls_server_name=self.tls_server_name,
            token=self.token,
        )


def client_security(options: SecurityOptions) -> "ClientSecurity":
    """The client's transport security from the options; checked now, so a wrong file is a usage error."""
    from grpc_model.src.security.channel import ClientSecurityError

    security = options.resolve()
    try:
        security.channel_credentials()
    except ClientSecurityError as error:
        raise fail(str(error), USAGE) from None
    return security


ModelName = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="The model to call on a server of several (its name as V2 lists it, e.g. word-stats); "
        "default: the server's default model. Sent as x-model-name call metadata.",
        rich_help_panel=ROUTE_PANEL,
    ),
]
ModelVersion = Annotated[
    str | None,
    typer.Option(
        metavar="X.Y.Z",
        help="The version of that model; default: the newest the server has loaded. Sent as x-model-version.",
        rich_help_panel=ROUTE_PANEL,
    ),
]


def model_route(name: str | None, version: str | None) -> "ModelRoute":
    """The model the calls are for; a name or version gRPC cannot carry is a usage error naming the option."""
    from grpc_model.src.client import ModelRoute, RouteError
    from grpc_model.src.routing import MODEL_NAME_METADATA

    try:
        return ModelRoute(name, version)
    except RouteError as error:
        option = "--model-name" if error.key == MODEL_NAME_METADATA else "--model-version"
        raise fail(f"{option}: {error}", USAGE) from None
