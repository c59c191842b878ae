"""TLS to Postgres as the README's operator guide says to configure it: `sslmode=verify-full`
and the CA file in DATABASE_URL (`sslrootcert=`). The service asks for TLS first, checks the
server's certificate against that CA and its name against the host, and never sends its login
in clear text to a server that refuses TLS.

The embedded PostgreSQL binaries are built without TLS, so the server here is a stand-in that
speaks Postgres's TLS negotiation (SSLRequest, then a real TLS handshake with a certificate
from a test CA made by the `openssl` command) and records the startup message the service
sends over it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service import Server
from service.app import StartupError
from tests.helpers import fast_settings

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)  # noqa: S603, S607


def _ca(directory: Path, name: str) -> None:
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=directory,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, server.crt/.key for the name `localhost` signed by it, and other-ca.crt."""
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key"),
        *("-out", "server.csr", "-subj", "/CN=localhost"),
        cwd=d,
    )
    _openssl(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext"),
        cwd=d,
    )
    return d


@dataclass
class StandIn:
    """What the stand-in server saw from the service."""

    port: int = 0
    ssl_requests: int = 0
    tls_sessions: int = 0
    startup_over_tls: list[dict[str, str]] = field(default_factory=list)
    plaintext_startups: int = 0


async def _startup(reader: asyncio.StreamReader) -> dict[str, str]:
    (length,) = struct.unpack("!i", await reader.readexactly(4))
    body = await reader.readexactly(length - 4)
    words = body[4:].split(b"\0")
    return {k.decode(): v.decode() for k, v in zip(words[::2], words[1::2], strict=False) if k}


async def _stand_in(pki: Path, *, offer_tls: bool) -> AsyncIterator[StandIn]:
    seen = StandIn()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(8)
            if first != _SSL_REQUEST:
                seen.plaintext_startups += 1
                return
            seen.ssl_requests += 1
            writer.write(b"S" if offer_tls else b"N")
            await writer.drain()
            if not offer_tls:
                # A client that gives up on TLS would now send its startup in clear text.
                if await reader.read(4):
                    seen.plaintext_startups += 1
                return
            await writer.start_tls(context)
            seen.tls_sessions += 1
            seen.startup_over_tls.append(await _startup(reader))
        except (OSError, asyncio.IncompleteReadError):
            return  # the client refused our certificate
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen.port = server.sockets[0].getsockname()[1]
    async with server:
        yield seen


@pytest.fixture
async def tls_server(pki: Path) -> AsyncIterator[StandIn]:
    async for seen in _stand_in(pki, offer_tls=True):
        yield seen


@pytest.fixture
async def plain_server(pki: Path) -> AsyncIterator[StandIn]:
    async for seen in _stand_in(pki, offer_tls=False):
        yield seen


async def start_against(host: str, port: int, query: str) -> None:
    """Start the service with this DATABASE_URL; the stand-in never lets it finish."""
    url = f"postgresql://writeback:pw@{host}:{port}/writeback?{query}"
    server = Server(fast_settings(url, run_scheduler=False))
    with pytest.raises(StartupError, match="cannot reach the database"):
        await asyncio.wait_for(server.start(), timeout=30)
    await server.stop()


async def test_verify_full_with_the_ca_file_logs_in_over_tls(
    tls_server: StandIn, pki: Path
) -> None:
    await start_against(
        "localhost", tls_server.port, f"sslmode=verify-full&sslrootcert={pki / 'ca.crt'}"
    )
    assert tls_server.startup_over_tls
    assert {s["user"] for s in tls_server.startup_over_tls} == {"writeback"}
    assert tls_server.plaintext_startups == 0


@pytest.mark.parametrize(
    ("host", "ca"),
    [
        ("localhost", "other-ca.crt"),  # certificate not signed by the CA we were given
        ("127.0.0.1", "ca.crt"),  # right CA, but the certificate is for another name
    ],
)
async def test_verify_full_refuses_a_certificate_it_cannot_verify(
    tls_server: StandIn, pki: Path, host: str, ca: str
) -> None:
    await start_against(host, tls_server.port, f"sslmode=verify-full&sslrootcert={pki / ca}")
    assert tls_server.ssl_requests > 0
    assert tls_server.startup_over_tls == []
    assert tls_server.plaintext_startups == 0


async def test_verify_full_never_falls_back_to_clear_text(plain_server: StandIn, pki: Path) -> None:
    await start_against(
        "localhost", plain_server.port, f"sslmode=verify-full&sslrootcert={pki / 'ca.crt'}"
    )
    assert plain_server.ssl_requests > 0
    assert plain_server.plaintext_startups == 0
