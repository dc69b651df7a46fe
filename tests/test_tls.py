"""An HTTPS 1C: the demo base under uvicorn with certificates made at test time by a CA of the test's own.

What a user with a self-signed or company-CA publication sees: the certificate named as the problem
(never "Is the web server running?"), MCP_ONEC_CA_BUNDLE to trust the CA, MCP_ONEC_VERIFY_TLS=false
with its warning at start, and a bad bundle file as one line naming the setting.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from py_server.check import run_check
from py_server.config import Settings
from py_server.demo.loopback import LoopbackServer
from py_server.demo.onec_emulator import PUBLICATION, EmulatorState, OneCEmulator, create_onec_emulator
from py_server.errors import ConfigError, OneCConnectionError
from py_server.main import main
from py_server.onec_client import OneCClient, _tls_context, _tls_context_for

from .conftest import TEST_PASSWORD, mcp_session, settings_env

pytestmark = pytest.mark.anyio

NOT_RUNNING = "Is the web server running"
DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pki:
    """A test CA and server certificates it signed, as PEM files."""

    ca: Path  # the CA certificate: what MCP_ONEC_CA_BUNDLE names
    ca_der: Path  # the same certificate as DER (a Windows .cer export): not PEM
    leaves: dict[str, tuple[Path, Path]]  # name -> (certificate, key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The CA, and three server certificates: for 127.0.0.1, for another name, and one that has expired."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Тестовый УЦ 1С"))
        .issuer_name(_name("Тестовый УЦ 1С"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, sans: list[x509.GeneralName], not_after: datetime.datetime) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_after - 10 * DAY)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return cert_file, key_file

    loopback: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    leaves = {
        "loopback": leaf("loopback", loopback, now + DAY),
        "other-name": leaf("other-name", [x509.DNSName("onec.example")], now + DAY),
        "expired": leaf("expired", loopback, now - DAY),
    }
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.cer").write_bytes(ca.public_bytes(serialization.Encoding.DER))
    return Pki(folder / "ca.pem", folder / "ca.cer", leaves)


@dataclass(frozen=True)
class HttpsOneC:
    url: str  # the publication URL: MCP_ONEC_URL
    state: EmulatorState

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "onec_url": self.url,
            "onec_username": self.state.username,
            "onec_password": self.state.password,
            "rag_backend": "off",
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.contextmanager
def https_onec(pki: Pki, leaf: str = "loopback") -> Iterator[HttpsOneC]:
    """The demo 1C base over HTTPS on 127.0.0.1, with the server certificate `leaf`."""
    cert, key = pki.leaves[leaf]
    state = EmulatorState(password=TEST_PASSWORD)
    options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    with LoopbackServer(create_onec_emulator(state), options=options) as server:
        yield HttpsOneC(f"https://127.0.0.1:{server.port}/{PUBLICATION}", state)


@pytest.fixture
def onec(pki: Pki) -> Iterator[HttpsOneC]:
    with https_onec(pki) as running:
        yield running


async def failure(settings: Settings) -> str:
    """What the client says when it cannot reach 1C with `settings` (discovery, then the health probe)."""
    async with OneCClient.from_settings(settings) as client:
        with pytest.raises(OneCConnectionError) as discovered:
            await client.discover()
        with pytest.raises(OneCConnectionError) as probed:
            await client.probe(5)
    assert str(discovered.value) == str(probed.value)
    return str(discovered.value)


# --- what the user sees -------------------------------------------------------------------------


async def test_a_certificate_of_an_unknown_ca_is_named_as_the_problem_with_the_settings_to_fix_it(
    onec: HttpsOneC,
) -> None:
    origin = onec.url.removesuffix(f"/{PUBLICATION}")
    assert await failure(onec.settings()) == (
        f"1C's HTTPS certificate at {origin} is not trusted (unable to get local issuer certificate): "
        "set MCP_ONEC_CA_BUNDLE to the PEM file of the CA that signed it, or, on a trusted network only, "
        "MCP_ONEC_VERIFY_TLS=false."
    )


async def test_with_the_ca_bundle_the_https_1c_is_trusted(onec: HttpsOneC, pki: Pki) -> None:
    async with OneCClient.from_settings(onec.settings(onec_ca_bundle=pki.ca)) as client:
        assert (await client.discover()).source == "manifest"
        assert {tool["name"] for tool in await client.list_tools()} >= {"get_metadata"}


def test_the_ca_bundle_is_trusted_in_addition_to_the_default_store(onec: HttpsOneC, pki: Pki) -> None:
    default = _tls_context(onec.settings()).cert_store_stats()["x509_ca"]
    with_bundle = _tls_context(onec.settings(onec_ca_bundle=pki.ca)).cert_store_stats()["x509_ca"]
    assert default > 1 and with_bundle == default + 1  # public services keep working beside the company CA


async def test_a_certificate_for_another_name_says_so(pki: Pki) -> None:
    with https_onec(pki, "other-name") as onec:
        message = await failure(onec.settings(onec_ca_bundle=pki.ca))
    assert "certificate at https://127.0.0.1:" in message
    assert "is for another name (IP address mismatch, certificate is not valid for '127.0.0.1')" in message
    assert "put the name the certificate was issued for in MCP_ONEC_URL" in message


async def test_an_expired_certificate_says_so(pki: Pki) -> None:
    with https_onec(pki, "expired") as onec:
        message = await failure(onec.settings(onec_ca_bundle=pki.ca))
    assert "is out of date (certificate has expired): renew it on the web server" in message


async def test_https_to_a_port_that_speaks_plain_http_says_so(emulator: OneCEmulator) -> None:
    url = emulator.url.replace("http://", "https://")
    settings = Settings(_env_file=None, onec_url=url, onec_username="demo", onec_password=TEST_PASSWORD)  # type: ignore[call-arg]
    message = await failure(settings)
    assert message.startswith("1C's web server at https://127.0.0.1:")
    assert "does not speak HTTPS on this port ([SSL: WRONG_VERSION_NUMBER] wrong version number)" in message
    assert "use http:// in MCP_ONEC_URL" in message and NOT_RUNNING not in message


# --- through the proxy --------------------------------------------------------------------------


async def test_a_tool_call_through_the_proxy_names_the_certificate(onec: HttpsOneC) -> None:
    async with mcp_session("streamable_http", onec.settings()) as session:
        result = await session.call_tool("get_metadata", {"object_type": "Справочники"})
    assert result.is_error
    [content] = result.content
    text = getattr(content, "text", "")
    assert "1C's HTTPS certificate at https://127.0.0.1:" in text and "is not trusted" in text
    assert "MCP_ONEC_CA_BUNDLE" in text and NOT_RUNNING not in text


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_the_proxy_serves_an_https_1c_with_the_ca_bundle(onec: HttpsOneC, pki: Pki, transport: str) -> None:
    async with mcp_session(transport, onec.settings(onec_ca_bundle=pki.ca)) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert "get_metadata" in tools
        result = await session.call_tool("get_metadata", {"object_type": "Справочники"})
    assert not result.is_error


async def test_check_prints_the_certificate_line(onec: HttpsOneC) -> None:
    out = io.StringIO()
    assert await run_check(onec.settings(), out=out) == 1
    assert "[FAIL] cannot talk to 1C: 1C's HTTPS certificate at https://127.0.0.1:" in out.getvalue()
    assert "is not trusted (unable to get local issuer certificate)" in out.getvalue()
    assert NOT_RUNNING not in out.getvalue()


# --- MCP_ONEC_VERIFY_TLS=false ------------------------------------------------------------------


@pytest.fixture
def fresh_tls_contexts() -> Iterator[None]:
    """As at a process start: no TLS context made yet."""
    _tls_context_for.cache_clear()
    yield
    _tls_context_for.cache_clear()


async def test_without_verification_1c_answers_and_the_risk_is_logged_once(
    onec: HttpsOneC, caplog: pytest.LogCaptureFixture, fresh_tls_contexts: None
) -> None:
    settings = onec.settings(onec_verify_tls=False)
    with caplog.at_level(logging.WARNING, logger="py_server.onec_client"):
        for _ in range(3):  # the service account's client, and people's under passthrough
            async with OneCClient.from_settings(settings) as client:
                await client.discover()
                assert await client.list_tools()
    warnings = [r.getMessage() for r in caplog.records if "MCP_ONEC_VERIFY_TLS=false" in r.getMessage()]
    assert warnings == [
        "MCP_ONEC_VERIFY_TLS=false: the certificate of an HTTPS 1C is not checked, so anyone on the network path "
        "can pose as 1C and read the 1C login. Set MCP_ONEC_CA_BUNDLE to the PEM file of the CA that signed it "
        "instead."
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "MCP_ONEC_VERIFY_TLS" in r.getMessage())


def test_every_start_without_verification_warns_once(onec: HttpsOneC) -> None:
    env = settings_env(onec.settings(onec_verify_tls=False))
    run = subprocess.run(
        [sys.executable, "-m", "py_server", "check"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr.count("MCP_ONEC_VERIFY_TLS=false: the certificate of an HTTPS 1C is not checked") == 1
    assert "[ok]   discovery via manifest" in run.stdout


# --- a bad MCP_ONEC_CA_BUNDLE ------------------------------------------------------------------


def _bad_bundles(pki: Pki, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    key = pki.leaves["loopback"][1]
    text = tmp_path / "notes.txt"
    text.write_text("сертификат где-то тут", encoding="utf-8")
    return {
        "missing": (tmp_path / "нет-такого.pem", "does not exist; set it to the PEM file of the CA"),
        "a folder": (tmp_path, "cannot read"),
        "DER": (pki.ca_der, "holds no valid PEM certificate (-----BEGIN CERTIFICATE-----); export the CA"),
        "a key": (key, "holds no valid PEM certificate"),
        "text": (text, "holds no valid PEM certificate"),
    }


@pytest.mark.parametrize("case", ["missing", "a folder", "DER", "a key", "text"])
def test_a_bundle_that_is_no_pem_certificate_is_one_line_naming_the_setting_and_the_file(
    onec: HttpsOneC, pki: Pki, tmp_path: Path, case: str
) -> None:
    path, says = _bad_bundles(pki, tmp_path)[case]
    with pytest.raises(ConfigError) as caught:
        OneCClient.from_settings(onec.settings(onec_ca_bundle=path))
    message = str(caught.value)
    assert message.startswith(f"MCP_ONEC_CA_BUNDLE: {path}") or message.startswith(
        f"MCP_ONEC_CA_BUNDLE: cannot read {path}"
    )
    assert says in message and "\n" not in message


def test_the_cli_stops_on_a_missing_bundle_with_one_line(
    onec: HttpsOneC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "company-ca.pem"
    monkeypatch.setenv("MCP_ONEC_URL", onec.url)
    monkeypatch.setenv("MCP_ONEC_CA_BUNDLE", str(missing))
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"onec-mcp-proxy: MCP_ONEC_CA_BUNDLE: {missing} does not exist; set it to the PEM file of the CA that "
        "signed 1C's HTTPS certificate\n"
    )
