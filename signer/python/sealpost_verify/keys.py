"""Public keys: the JWKS (/.well-known/jwks.json) and the key history (/v1/keys).

Parsed with the rules of Go's signer.ParseKeySet. Times are integer
nanoseconds since the Unix epoch, so that windows compare exactly as in Go
(a JWK date may carry nanoseconds).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import JSONError, KeySetError, shorten
from .jcs import Input, Number, parse_json

MAX_KEY_SET_SIZE = 1 << 20
"""The largest JWKS or key-history document, in bytes (1 MiB)."""

STATUSES = ("next", "active", "grace", "expired", "revoked")

_MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z
_NUMERIC_DATE = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,9}))?")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64url(b: bytes) -> str:
    """Encodes bytes as base64url without padding."""
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def unb64url(s: Any) -> Optional[bytes]:
    """Decodes base64url without padding strictly (one value, one text), or returns None."""
    if not isinstance(s, str) or not _B64URL.fullmatch(s) or len(s) % 4 == 1:
        return None
    b = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    return b if b64url(b) == s else None


def unb64std(s: str) -> Optional[bytes]:
    """Decodes padded standard base64 strictly, or returns None."""
    if not _B64STD.fullmatch(s) or len(s) % 4:
        return None
    b = base64.b64decode(s, validate=True)
    return b if base64.b64encode(b).decode("ascii") == s else None


def thumbprint(pub: bytes) -> str:
    """The RFC 7638 thumbprint of an Ed25519 public key: its kid."""
    members = '{"crv":"Ed25519","kty":"OKP","x":"' + b64url(pub) + '"}'
    return b64url(hashlib.sha256(members.encode("ascii")).digest())


@dataclass(frozen=True)
class PublicKey:
    """A published key. Times are nanoseconds since the epoch, or None when absent."""

    kid: str
    x: str
    public_key: Optional[Ed25519PublicKey]
    status: str  # "" in a JWKS
    issued_at: Optional[int] = None
    not_before: Optional[int] = None
    expires: Optional[int] = None
    signs_until: Optional[int] = None
    revoked_at: Optional[int] = None


class KeySet:
    """A parsed JWKS or key history."""

    def __init__(self, keys: List[PublicKey]):
        self.keys: Tuple[PublicKey, ...] = tuple(keys)

    def lookup(self, kid: str) -> Optional[PublicKey]:
        """Returns the key with this kid, or None."""
        for k in self.keys:
            if k.kid == kid:
                return k
        return None


def _numeric_date(v: Any, name: str) -> int:
    m = _NUMERIC_DATE.fullmatch(v.text) if isinstance(v, Number) else None
    if not m:
        raise ValueError(f'"{name}" is not a plain non-negative number of seconds')
    sec = int(m.group(1))
    if sec > _MAX_NUMERIC_DATE:
        raise ValueError(f'"{name}" is out of range')
    return sec * 1_000_000_000 + int((m.group(2) or "").ljust(9, "0"))


def _import(x: bytes) -> Optional[Ed25519PublicKey]:
    # A key the library refuses is kept, as Go keeps it, and verifies nothing.
    try:
        return Ed25519PublicKey.from_public_bytes(x)
    except ValueError:
        return None


_DATES = {"iat": "issued_at", "nbf": "not_before", "exp": "expires", "signs_until": "signs_until", "revoked_at": "revoked_at"}


def _parse_jwk(m: Any) -> PublicKey:
    if not isinstance(m, dict):
        raise ValueError("not a json object")
    if "d" in m:
        raise ValueError('holds private key material ("d")')

    def text(name: str, required: bool) -> Optional[str]:
        if name not in m:
            if required:
                raise ValueError(f'no "{name}" member')
            return None
        if not isinstance(m[name], str):
            raise ValueError(f'"{name}" is not a string')
        return m[name]

    if text("kty", True) != "OKP":
        raise ValueError(f'kty {json.dumps(shorten(m["kty"]))} is not "OKP"')
    if text("crv", True) != "Ed25519":
        raise ValueError(f'crv {json.dumps(shorten(m["crv"]))} is not "Ed25519"')
    x = unb64url(text("x", True))
    if x is None or len(x) != 32:
        raise ValueError("x is not 32 bytes of base64url without padding")
    kid = text("kid", True)
    if kid != thumbprint(x):
        raise ValueError(f"kid {json.dumps(shorten(kid))} is not the RFC 7638 thumbprint of x")
    use = text("use", False)
    if use not in (None, "", "sig"):
        raise ValueError(f'use {json.dumps(shorten(use))} is not "sig"')
    alg = text("alg", False)
    if alg not in (None, "Ed25519", "EdDSA"):
        raise ValueError(f'alg {json.dumps(shorten(alg))} is not "Ed25519"')
    status = text("status", False) or ""
    if status and status not in STATUSES:
        raise ValueError(f"status {json.dumps(shorten(status))} is unknown")
    dates: Dict[str, int] = {}
    for name, field in _DATES.items():
        if name in m:
            dates[field] = _numeric_date(m[name], name)
    su, nbf = dates.get("signs_until"), dates.get("not_before")
    if su is not None and nbf is not None and su < nbf:
        raise ValueError("signs_until is before nbf")
    return PublicKey(kid=kid, x=b64url(x), public_key=_import(x), status=status, **dates)


def parse_key_set(doc: Input) -> KeySet:
    """Parses a JWKS or key-history document strictly, as Go's signer.ParseKeySet.

    Ed25519 OKP keys whose kid is their thumbprint, no private keys, no
    duplicate members or kids. Raises KeySetError naming the offending key.
    """
    size = len(doc.encode("utf-8")) if isinstance(doc, str) else len(doc)
    if size > MAX_KEY_SET_SIZE:
        raise KeySetError(f"document too large: {size} bytes, limit {MAX_KEY_SET_SIZE}")
    try:
        top = parse_json(doc)
    except JSONError as e:
        raise KeySetError(str(e)) from None
    if not isinstance(top, dict):
        raise KeySetError("not a json object")
    if "keys" not in top:
        raise KeySetError('no "keys" member')
    if not isinstance(top["keys"], list):
        raise KeySetError('"keys" is not an array')
    keys: List[PublicKey] = []
    seen: Dict[str, int] = {}
    for i, raw in enumerate(top["keys"]):
        try:
            k = _parse_jwk(raw)
        except ValueError as e:
            raise KeySetError(f"key {i}: {e}") from None
        if k.kid in seen:
            raise KeySetError(f"key {i}: kid {k.kid} repeats key {seen[k.kid]}")
        seen[k.kid] = i
        keys.append(k)
    return KeySet(keys)


_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z")


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
    # algorithm); datetime cannot hold the year 0 that the layout allows.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_time(s: Any) -> Optional[int]:
    """Reads a receipt time, "2006-01-02T15:04:05.000000Z" exactly, as nanoseconds, or returns None."""
    m = _TIME.fullmatch(s) if isinstance(s, str) else None
    if not m:
        return None
    y, mo, d, h, mi, sec, micro = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and h <= 23 and mi <= 59 and sec <= 59):
        return None
    seconds = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
    return seconds * 1_000_000_000 + micro * 1000
