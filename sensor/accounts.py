"""Who sent a request: the account (from a configured header, kept only as a keyed hash) and the
client address (``X-Forwarded-For`` believed only when the peer is a configured proxy)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

__all__ = ["AccountIdentifier", "load_or_create_key"]

MAX_CREDENTIAL = 4096


def load_or_create_key(env_var: str, state_dir: Path) -> bytes:
    """The hashing key: ``$env_var`` if set, else a random key kept (mode 0600) in the state folder."""
    value = os.environ.get(env_var)
    if value:
        return value.encode("utf-8", errors="surrogateescape")
    path = state_dir / "account.key"
    if path.exists():
        return path.read_bytes()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class AccountIdentifier:
    def __init__(self, header: str, key: bytes, trusted_proxies: list[str] = ()):
        self.header = header.lower().encode("latin-1")
        self.key = key
        self.proxies = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]

    def account_id(self, credential: bytes | str) -> str:
        """The id events carry for a credential: ``acct-`` + 24 hex digits of HMAC-SHA256."""
        raw = credential.encode("utf-8", errors="surrogateescape") if isinstance(credential, str) else credential
        return "acct-" + hmac.new(self.key, raw, hashlib.sha256).hexdigest()[:24]

    def credential(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        for k, v in headers:
            if k == self.header:
                v = v.strip()
                if self.header == b"authorization":
                    scheme, _, token = v.partition(b" ")
                    if scheme.lower() != b"bearer":
                        return None
                    v = token.strip()
                return v[:MAX_CREDENTIAL] or None
        return None

    def _trusted(self, addr: str | None) -> bool:
        if not addr or not self.proxies:
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def client_ip(self, peer: str | None, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The peer, or, behind trusted proxies, the right-most untrusted ``X-Forwarded-For`` entry."""
        if not self._trusted(peer):
            return _valid_ip(peer)
        hops: list[str] = []
        for k, v in headers:
            if k == b"x-forwarded-for":
                hops.extend(h.strip() for h in v.decode("latin-1").split(","))
        for hop in reversed(hops):
            if not self._trusted(hop):
                return _valid_ip(hop)
        return _valid_ip(peer)

    def identify(self, peer: str | None, headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None]:
        """(account id, client address). Without the header the account is the address itself."""
        ip = self.client_ip(peer, headers)
        cred = self.credential(headers)
        if cred is not None:
            return self.account_id(cred), ip
        return f"addr-{ip or 'unknown'}", ip


def _valid_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None
