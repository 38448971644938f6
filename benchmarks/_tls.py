"""The TLS material of one benchmark run and the contexts every TLS peer builds from it.

The harness makes one certificate authority and one server certificate for ``localhost`` and
127.0.0.1 per run (trustme when importable, else the ``openssl`` command) into a directory it
hands to every worker; kernel TCP and utcp then load the same files into the same TLS 1.3-only
contexts, so both negotiate the same cipher, key exchange and certificate (ECDSA P-256).
"""

from __future__ import annotations

import importlib.util
import shutil
import ssl
import subprocess
from pathlib import Path

CA_FILE = "ca.pem"  # what the client trusts
CHAIN_FILE = "server.pem"  # the server's certificate (and, from trustme, its chain)
KEY_FILE = "server.key"
IDENTITIES = ("localhost", "127.0.0.1")  # the workers connect to 127.0.0.1


def make_certificates(directory: Path, *, method: str = "auto") -> str:
    """Write the CA, the server certificate and its key into ``directory``; returns what made
    them: ``"trustme"`` or ``"openssl"`` (``method`` forces one)."""
    if method == "auto":
        method = "trustme" if importlib.util.find_spec("trustme") is not None else "openssl"
    directory.mkdir(parents=True, exist_ok=True)
    if method == "trustme":
        import trustme

        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        leaf = ca.issue_cert(*IDENTITIES, key_type=trustme.KeyType.ECDSA)
        ca.cert_pem.write_to_path(str(directory / CA_FILE))
        leaf.private_key_pem.write_to_path(str(directory / KEY_FILE))
        for i, pem in enumerate(leaf.cert_chain_pems):
            pem.write_to_path(str(directory / CHAIN_FILE), append=i > 0)
        return "trustme"
    if method != "openssl":
        raise ValueError(f"no certificate method {method!r}")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("TLS peers need trustme or the openssl command: neither was found")
    # A self-signed certificate is its own trust anchor: the client trusts this very file.
    subprocess.run(
        [
            openssl,
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=" + ",".join(_san(i) for i in IDENTITIES)),
            *("-keyout", str(directory / KEY_FILE), "-out", str(directory / CHAIN_FILE)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    shutil.copyfile(directory / CHAIN_FILE, directory / CA_FILE)
    return "openssl"


def _san(identity: str) -> str:
    return f"IP:{identity}" if identity[0].isdigit() else f"DNS:{identity}"


def _tls13_only(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    return context


def server_context(directory: Path) -> ssl.SSLContext:
    context = _tls13_only(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(directory / CHAIN_FILE, directory / KEY_FILE)
    return context


def client_context(directory: Path) -> ssl.SSLContext:
    """Verifies the server against the run's CA, host name included, as a user's client does."""
    context = _tls13_only(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.load_verify_locations(directory / CA_FILE)
    return context
