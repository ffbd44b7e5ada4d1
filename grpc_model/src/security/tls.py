"""Server TLS and mutual TLS from the PEM files the settings name, checked before the port opens.

gRPC reads the bytes it is given and only complains at the first handshake, in terms of the
TLS library; the standard ssl module reads the same files now and says which setting is wrong.
"""

import ssl
from pathlib import Path

import grpc

from grpc_model.src.settings import Settings, env_var, flag


class TLSSetupError(Exception):
    """A TLS file that is missing, unreadable, not PEM, or a key that does not match its certificate."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None when `tls_cert` is not set (plaintext)."""
    if https_context(settings) is None:  # the ssl module's checks, which name the setting at fault
        return None
    cert = _read_pem("tls_cert", settings.tls_cert)
    key = _read_pem("tls_key", settings.tls_key)
    client_ca = _read_pem("tls_client_ca", settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def https_context(settings: Settings) -> ssl.SSLContext | None:
    """The gRPC port's TLS for the HTTP and metrics ports, from the same files (a client certificate required when
    `tls_client_ca` is set), or None when `tls_cert` is not set."""
    if not settings.tls_cert:
        return None
    _read_pem("tls_cert", settings.tls_cert)
    _read_pem("tls_key", settings.tls_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except ssl.SSLError as error:
        raise TLSSetupError(
            f"tls_cert {settings.tls_cert} and tls_key {settings.tls_key} do not make a certificate and its "
            f"key ({error.reason or error}); {_where('tls_cert')}, {_where('tls_key')}"
        ) from None
    if settings.tls_client_ca:
        _read_pem("tls_client_ca", settings.tls_client_ca)
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca)
        except ssl.SSLError as error:
            raise TLSSetupError(
                f"tls_client_ca {settings.tls_client_ca} holds no usable CA certificate ({error.reason or error}); "
                f"{_where('tls_client_ca')}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _read_pem(setting: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TLSSetupError(f"{setting}: cannot read {path}: {error.strerror}; {_where(setting)}") from None
    if b"-----BEGIN " not in data:
        raise TLSSetupError(f"{setting}: {path} is not a PEM file (no -----BEGIN line); {_where(setting)}")
    return data


def _where(setting: str) -> str:
    return f"set {setting} with {flag(setting)} or {env_var(setting)}"
