"""Syslog over TLS into a real rsyslog (imtcp with the gtls stream driver, Debian package rsyslog-gnutls),
with a self-signed certificate made here with ``cryptography``; hostile values arrive intact-escaped."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers_alerts import all_alerts, hostile_alert
from kizashi.connectors.base import DeliveryError
from kizashi.connectors.syslog import CefFormatter, SyslogSink

GTLS = [Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"), Path("/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so")]


def _cert(d: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    c, k = d / "cert.pem", d / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()))
    return c, k


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rsyslog_tls(tmp_path_factory, rsyslogd_path):
    exe = rsyslogd_path
    if not any(p.exists() for p in GTLS):
        pytest.fail("rsyslog's TLS driver is needed (Debian package rsyslog-gnutls; scripts/provision.sh installs it)")
    d = tmp_path_factory.mktemp("rsyslog-tls")
    cert, key = _cert(d)
    port = _port()
    out = d / "tls.log"
    (d / "rsyslog.conf").write_text(f"""
global(workDirectory="{d}" maxMessageSize="64k"
       defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{cert}"
       defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="fields" type="string" string="%app-name%|%msgid%|%msg%\\n")
ruleset(name="tls") {{ action(type="omfile" file="{out}" template="fields") }}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="tls")
""")
    log = open(d / "rsyslogd.err", "w")
    proc = subprocess.Popen([exe, "-n", "-f", str(d / "rsyslog.conf"), "-i", str(d / "rsyslogd.pid")],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    if proc.poll() is not None:
        pytest.fail("rsyslogd did not start: " + (d / "rsyslogd.err").read_text())
    yield {"port": port, "out": out, "cert": cert}
    proc.terminate()
    proc.wait(10)


def _lines(path: Path, n: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.1)
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_cef_over_tls_lands_in_rsyslog_intact(rsyslog_tls):
    alerts, events = all_alerts()
    h, hev = hostile_alert()
    batch, evs = [*alerts, h], {**events, **hev}
    sink = SyslogSink("127.0.0.1", rsyslog_tls["port"], protocol="tls", format="cef",
                      cafile=str(rsyslog_tls["cert"]))
    sink.send(batch, evs)
    sink.close()
    lines = _lines(rsyslog_tls["out"], len(batch))
    assert len(lines) == len(batch)
    expected = [CefFormatter().line(a, evs) for a in batch]
    got = [line.split("|", 2)[2] for line in lines]
    assert [line.split("|", 2)[0] for line in lines] == ["kizashi"] * len(batch)
    # rsyslog parsed our RFC 5424 header and stored each CEF line byte for byte (no #0xx rewrites)
    assert got == expected
    assert "cs1Label=atlasTechniques" in got[0] and "cs1=AML.T0024.002,AML.T0040" in got[0]
    assert "#0" not in got[-1] and "攻撃者 🚨" in got[-1]


def test_untrusted_certificate_is_refused(rsyslog_tls, tmp_path):
    other, _ = _cert(tmp_path)  # a CA that did not sign the server's certificate
    alerts, events = all_alerts()
    with pytest.raises(DeliveryError):
        SyslogSink("127.0.0.1", rsyslog_tls["port"], protocol="tls", format="cef", cafile=str(other)).send(alerts, events)
