"""A client's side of transport security: TLS with system roots or a CA file, a client certificate
for mutual TLS, and a bearer token, as gRPC channel credentials.

The token rides on gRPC call credentials, which gRPC sends over TLS only: a token without TLS is
refused here, before it could leave in plaintext.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

TOKEN_ENV = "GRPC_MODEL_TOKEN"
CLIENT_ENV = {
    "tls_ca": "GRPC_MODEL_CLIENT_TLS_CA",
    "tls_cert": "GRPC_MODEL_CLIENT_TLS_CERT",
    "tls_key": "GRPC_MODEL_CLIENT_TLS_KEY",
    "tls_server_name": "GRPC_MODEL_CLIENT_TLS_SERVER_NAME",
    "token": TOKEN_ENV,
}
"""The environment variables a client's options fall back to (the server's own settings are others)."""


class ClientSecurityError(ValueError):
    """Client security options that do not fit together, or a file that cannot be read."""


@dataclass(frozen=True)
class ClientSecurity:
    tls: bool = False
    """TLS with the system's root certificates, unless `tls_ca` names others."""
    tls_ca: str = ""
    """PEM file of the CA certificates that signed the server's certificate."""
    tls_cert: str = ""
    """PEM file of this client's certificate chain, for a server that requires one (mutual TLS)."""
    tls_key: str = ""
    tls_server_name: str = ""
    """The name the server's certificate must carry, when it is not the target's host (e.g. an IP)."""
    token: str = field(default="", repr=False)
    """A bearer token, sent as `authorization: Bearer <token>` on every call; never in the repr."""

    @classmethod
    def from_env(cls, tls: bool = False, **given: str | None) -> "ClientSecurity":
        """Options given (None or empty: not given) over the client's environment variables."""
        values = {name: given.get(name) or os.environ.get(variable, "") for name, variable in CLIENT_ENV.items()}
        return cls(tls=tls, **values)

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca or self.tls_cert or self.tls_server_name)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The channel's credentials, or None for plaintext; raises ClientSecurityError."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ClientSecurityError("--tls-cert and --tls-key go together: a client certificate needs its key")
        if not self.uses_tls:
            if self.token:
                raise ClientSecurityError(
                    "a bearer token is sent over TLS only: add --tls (system roots) or --tls-ca FILE"
                )
            return None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read("--tls-ca", self.tls_ca),
            private_key=_read("--tls-key", self.tls_key),
            certificate_chain=_read("--tls-cert", self.tls_cert),
        )
        if self.token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(self.token)
            )
        return credentials

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.tls_server_name)] if self.tls_server_name else []


def _read(option: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ClientSecurityError(f"{option}: cannot read {path}: {error.strerror}") from None
