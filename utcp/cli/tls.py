"""The TLS options of ``cat``, ``echo-server``, ``perf`` and ``tunnel``, and the one place their
``ssl.SSLContext`` is made: ``--tls-cert``/``--tls-key`` for the side that accepts connections,
``--tls-ca``/``--tls-insecure``/``--tls-server-name`` for the side that opens them.

Options misused or files that do not load are a ``ValueError`` with a one-line message (the
commands exit 2 with it); a failed handshake is described in one line by ``describe_failure``.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Sides", "TlsSetup", "add_tls_options", "describe_failure", "tls_setup"]

# The option each argparse destination comes from, per side.
_ACCEPTING = {"tls_cert": "--tls-cert", "tls_key": "--tls-key"}
_CONNECTING = {
    "tls_ca": "--tls-ca",
    "tls_insecure": "--tls-insecure",
    "tls_server_name": "--tls-server-name",
}
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH_CODES = (62, 64)


@dataclass(frozen=True)
class Sides:
    """What the accepting and the connecting side are called in a command's terms, e.g.
    ``--listen`` and ``connecting (without --listen)``: each option's help starts with its
    side, and an option given on the wrong side "is for" the other."""

    accepting: str = "the side that accepts connections"
    connecting: str = "the side that connects"


def add_tls_options(
    parser: argparse.ArgumentParser, sides: Sides | None = None, *, connecting: bool = True
) -> None:
    """Add the options of the sides the command plays: the accepting side's certificate and
    key, and (with ``connecting``) what the connecting side trusts; with ``sides``, each
    option's help says which side it is for."""
    group = parser.add_argument_group(
        "TLS (the standard library's ssl over the utcp connection; default: none)"
    )
    server = f"{sides.accepting}: " if sides is not None else ""
    client = f"{sides.connecting}: " if sides is not None else ""
    group.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help=f"{server}accept TLS only, presenting this certificate chain (PEM, the server's "
        "own certificate first); needs --tls-key",
    )
    group.add_argument(
        "--tls-key", type=Path, metavar="FILE", help=f"{server}the private key (PEM) of --tls-cert"
    )
    if not connecting:
        return
    trust = group.add_mutually_exclusive_group()
    trust.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help=f"{client}connect over TLS, trusting the CA certificates (PEM) in FILE to vouch "
        "for the server",
    )
    trust.add_argument(
        "--tls-insecure",
        action="store_true",
        help=f"{client}connect over TLS without checking the server's certificate (a warning "
        "says so: anyone on the path can pose as the server)",
    )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help=f"{client}the name the server's certificate must carry, also sent as SNI "
        "(default: the host connected to)",
    )


@dataclass(frozen=True)
class TlsSetup:
    """What the options ask for: ``context`` None for plain utcp."""

    context: ssl.SSLContext | None = None
    server_hostname: str | None = None

    def keywords(self) -> dict[str, Any]:
        """The keywords for utcp's open or serve call: ``ssl=`` (and ``server_hostname=``
        when one was given), none for plain utcp."""
        if self.context is None:
            return {}
        if self.server_hostname is None:
            return {"ssl": self.context}
        return {"ssl": self.context, "server_hostname": self.server_hostname}


def _given(args: argparse.Namespace, options: dict[str, str]) -> list[str]:
    return [flag for dest, flag in options.items() if getattr(args, dest, None)]


def tls_setup(
    args: argparse.Namespace, *, accepting: bool, prog: str, sides: Sides | None = None
) -> TlsSetup:
    """The TLS the options of a command in the role ``accepting`` (else connecting) ask for.

    Raises ``ValueError`` (one line, naming the side as ``sides`` does) for options of the
    other side, a certificate without its key, ``--tls-server-name`` without TLS, or files that
    do not load; ``--tls-insecure`` prints its warning on stderr, ``prog`` naming who warns.
    """
    sides = sides or Sides()
    if accepting:
        misplaced = _given(args, _CONNECTING)
        if misplaced:
            raise ValueError(f"{misplaced[0]} is for {sides.connecting}")
        return TlsSetup(_server_context(args.tls_cert, args.tls_key))
    misplaced = _given(args, _ACCEPTING)
    if misplaced:
        raise ValueError(f"{misplaced[0]} is for {sides.accepting}")
    ca: Path | None = getattr(args, "tls_ca", None)
    insecure: bool = getattr(args, "tls_insecure", False)
    name: str | None = getattr(args, "tls_server_name", None)
    if ca is None and not insecure:
        if name is not None:
            raise ValueError("--tls-server-name needs --tls-ca FILE or --tls-insecure")
        return TlsSetup()
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        print(
            f"{prog}: warning: --tls-insecure: the server's certificate is not checked, "
            "so anyone on the path can pose as the server and read the stream",
            file=sys.stderr,
            flush=True,
        )
    else:
        assert ca is not None
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ValueError(f"cannot load --tls-ca {ca}: {_why(exc)}") from None
    return TlsSetup(context, name)


def _server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together: give both")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise ValueError(
            f"cannot load --tls-cert {cert} with --tls-key {key}: {_why(exc)}"
        ) from None
    return context


def _why(exc: BaseException) -> str:
    """A load error in a few words: ``No such file or directory``, ``KEY_VALUES_MISMATCH``."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def describe_failure(exc: BaseException) -> str | None:
    """One line for a TLS failure (None: ``exc`` is not a TLS error); for a certificate not
    accepted, with the option that would help."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _NAME_MISMATCH_CODES:
            hint = "--tls-server-name NAME checks another name"
        else:
            hint = "trust its CA with --tls-ca FILE, or skip the check with --tls-insecure"
        return f"TLS: the server's certificate was not accepted: {exc.verify_message} ({hint})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return None
