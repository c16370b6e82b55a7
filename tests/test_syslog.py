"""CEF / LEEF / RFC 5424 lines delivered to a real rsyslog on loopback, escaping checked on hostile values."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time

import pytest
from helpers_alerts import HOSTILE, all_alerts, hostile_alert
from kizashi.connectors.syslog import CefFormatter, LeefFormatter, Rfc5424Formatter, SyslogSink, cef_value


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory, rsyslogd_path):
    exe = rsyslogd_path
    d = tmp_path_factory.mktemp("rsyslog")
    udp, tcp = free_port(socket.SOCK_DGRAM), free_port()
    out = d / "received.log"
    conf = d / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{d}" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="kizashi") {{ action(type="omfile" file="{out}" template="raw" flushOnTXEnd="on" asyncWriting="off") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="kizashi")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="kizashi")
""")
    proc = subprocess.Popen([exe, "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", tcp), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"rsyslogd did not start: {proc.stderr.read().decode()[-2000:]}")
    yield {"udp": udp, "tcp": tcp, "out": out}
    proc.terminate()
    proc.wait(timeout=10)


def wait_lines(path, n, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            lines = [x for x in path.read_text(encoding="utf-8", errors="replace").split("\n") if x]
            if len(lines) >= n:
                return lines
        time.sleep(0.1)
    return [x for x in path.read_text(encoding="utf-8", errors="replace").split("\n") if x] if path.exists() else []


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_cef_lands_in_rsyslog_intact(rsyslog, protocol):
    alerts, events = all_alerts()
    alert, evs = hostile_alert()
    alerts = [*alerts, alert]
    events = {**events, **evs}
    before = len(wait_lines(rsyslog["out"], 0, timeout=0.1))
    sink = SyslogSink("127.0.0.1", rsyslog[protocol], protocol=protocol, format="cef")
    sink.send(alerts, events)
    lines = wait_lines(rsyslog["out"], before + len(alerts))[before:]
    assert len(lines) == len(alerts)
    expected = [CefFormatter().line(a, events) for a in alerts]
    for line, cef in zip(lines, expected, strict=True):
        assert line.endswith(" - " + cef), (line, cef)  # the CEF payload arrived byte for byte
    hostile = lines[-1]
    assert "\n" not in hostile and "\x00" not in hostile and "\x85" not in hostile and "#011" not in hostile
    assert "cs1Label=atlasTechniques cs1=" in hostile and "AML.T" in hostile


def test_cef_escaping_rules():
    assert cef_value("a=b\\c\nd\re") == "a\\=b\\\\c\\nd\\re"
    alert, events = hostile_alert()
    line = CefFormatter().line(alert, events)
    header = line.split("|")
    # 7 unescaped pipes separate the 8 header fields; escaped pipes in the rule id stay inside
    unescaped = [i for i, ch in enumerate(line) if ch == "|" and line[i - 1] != "\\"]
    assert len(unescaped) >= 7 and header[0] == "CEF:0"
    ext = line[unescaped[6] + 1:]
    for kv in ext.split(" cs")[1:]:
        assert "\n" not in kv


def test_leef_and_rfc5424(rsyslog):
    alert, events = hostile_alert()
    leef = LeefFormatter().line(alert, events)
    assert leef.startswith("LEEF:2.0|kizashi|kizashi|0.1|") and "|x09|" in leef
    body = leef.split("|x09|", 1)[1]
    pairs = body.split("\t")
    assert all("=" in p for p in pairs) and not any("\n" in p or "\r" in p for p in pairs)
    assert any(p.startswith("atlasTechniques=AML.T") for p in pairs)
    line = Rfc5424Formatter().line(alert, events)
    assert line.startswith("<10") and '[kizashi@32473 alertId="' in line
    assert '\\"' in line or '"' not in HOSTILE  # quotes inside SD values are escaped
    before = len(wait_lines(rsyslog["out"], 0, timeout=0.1))
    SyslogSink("127.0.0.1", rsyslog["tcp"], protocol="tcp", format="rfc5424").send([alert], events)
    got = wait_lines(rsyslog["out"], before + 1)[before:]
    assert got and got[0].endswith(line.split(" ", 1)[1])


def test_tls_transport(tmp_path):
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime.now(UTC) - timedelta(days=1))
            .not_valid_after(datetime.now(UTC) + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = []

    def serve():
        conn, _ = srv.accept()
        with ctx.wrap_socket(conn, server_side=True) as s:
            buf = b""
            while chunk := s.recv(65536):
                buf += chunk
            got.append(buf)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    alerts, events = all_alerts()
    SyslogSink("127.0.0.1", port, protocol="tls", format="cef", cafile=str(tmp_path / "c.pem")).send(alerts, events)
    t.join(10)
    srv.close()
    lines = got[0].decode().splitlines()
    assert len(lines) == len(alerts) and all(" CEF:0|kizashi|" in x for x in lines)
