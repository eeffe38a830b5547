"""Offline verification of a receipt envelope, step for step as Go's signer.Verify."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

from cryptography.exceptions import InvalidSignature

from .errors import JSONError, VerifyError, shorten
from .jcs import Input, Number, canonicalize, is_integer, parse_json, to_plain
from .keys import KeySet, b64url, parse_time, unb64url

MAX_ENVELOPE_SIZE = 64 << 20
"""The largest envelope, in bytes, that verify_receipt accepts (64 MiB)."""

_RECEIPT_STRINGS = ("id", "kid", "tenant", "route", "channel", "received_at", "signed_at", "payload_sha256", "raw_sha256")
_RECEIPT_MEMBERS = frozenset(_RECEIPT_STRINGS + ("v", "source", "raw_size"))
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True)
class VerifiedReceipt:
    """The outcome of a successful verification. Numbers are int (when
    written as integers, exactly) or float."""

    receipt: Dict[str, Any]
    payload: Any
    payload_present: bool
    """Whether the payload was present and matched payload_sha256."""
    key_id: str
    """The kid of the key that verified the signature."""


def to_bytes(doc: Input) -> bytes:
    """Returns the UTF-8 bytes of a str, or the bytes as they are."""
    if isinstance(doc, str):
        return doc.encode("utf-8", "surrogatepass")
    if isinstance(doc, (bytes, bytearray, memoryview)):
        return bytes(doc)
    raise TypeError("expected str or bytes")


def _int64(v: Any) -> Optional[int]:
    if not is_integer(v):
        return None
    n = int(v.text)
    return n if n in _INT64 else None


def _malformed(step: str, detail: str) -> VerifyError:
    return VerifyError(step, "malformed", detail)


def _check_receipt(r: Any) -> int:
    if not isinstance(r, dict):
        raise _malformed("receipt", "receipt is not a json object")
    for name in r:
        if name not in _RECEIPT_MEMBERS:
            raise _malformed("receipt", f"unknown receipt member {json.dumps(shorten(name))}")
    for name in _RECEIPT_MEMBERS:
        if name not in r:
            raise _malformed("receipt", f'no "{name}" member')
    for name in _RECEIPT_STRINGS:
        if not isinstance(r[name], str):
            raise _malformed("receipt", f'"{name}" is not a string')
    v = _int64(r["v"])
    if v is None:
        raise _malformed("receipt", '"v" is not an integer')
    if _int64(r["raw_size"]) is None:
        raise _malformed("receipt", '"raw_size" is not an integer')
    if v != 1:
        raise _malformed("receipt", f"receipt version {v} is not 1")
    if parse_time(r["received_at"]) is None:
        raise _malformed("receipt", "received_at is not in the form 2006-01-02T15:04:05.000000Z")
    signed_at = parse_time(r["signed_at"])
    if signed_at is None:
        raise _malformed("receipt", "signed_at is not in the form 2006-01-02T15:04:05.000000Z")
    return signed_at


def _check_signature(s: Any) -> bytes:
    if not isinstance(s, dict):
        raise _malformed("signature", "signature is not a json object")
    for name in ("alg", "kid", "sig"):
        if name not in s:
            raise _malformed("signature", f'signature has no "{name}" member')
        if not isinstance(s[name], str):
            raise _malformed("signature", f'signature "{name}" is not a string')
    if len(s) != 3:
        raise _malformed("signature", "signature has unknown members")
    if s["alg"] != "Ed25519":
        raise _malformed("signature", f'signature alg {json.dumps(shorten(s["alg"]))} is not "Ed25519"')
    sig = unb64url(s["sig"])
    if sig is None or len(sig) != 64:
        raise _malformed("signature", "sig is not 64 bytes of base64url without padding")
    return sig


def _format_ns(ns: int) -> str:
    try:
        t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(microseconds=ns // 1000)
        return t.isoformat().replace("+00:00", "Z")
    except OverflowError:
        return str(ns)


def payload_digest(payload: Any) -> str:
    """base64url(SHA-256(JCS(payload))), the value of payload_sha256."""
    return b64url(hashlib.sha256(canonicalize(payload).encode("utf-8")).digest())


def verify_receipt(envelope: Input, keys: Optional[KeySet]) -> VerifiedReceipt:
    """Checks a receipt envelope (bytes or str) against a KeySet.

    In the order of Go's signer.Verify: the envelope's form, the receipt's
    members and times, the signature member, the kid in both, the key in the
    set, signed_at in [nbf, signs_until), no revocation at or before
    signed_at, Ed25519 over JCS(receipt), and payload_sha256 when the payload
    is present. Raises VerifyError.
    """
    data = to_bytes(envelope)
    if len(data) > MAX_ENVELOPE_SIZE:
        raise _malformed("envelope", f"document too large: {len(data)} bytes, limit {MAX_ENVELOPE_SIZE}")
    try:
        top = parse_json(data)
    except JSONError as e:
        raise VerifyError("envelope", "malformed", str(e), "lossy_number" if e.code == "lossy_number" else None) from None
    if not isinstance(top, dict):
        raise _malformed("envelope", "envelope is not a json object")
    if "receipt" not in top:
        raise _malformed("envelope", 'no "receipt" member')
    if "signature" not in top:
        raise _malformed("envelope", 'no "signature" member')
    for name in top:
        if name not in ("receipt", "signature", "payload"):
            raise _malformed("envelope", f"unknown member {json.dumps(shorten(name))}")
    r = top["receipt"]
    signed_at = _check_receipt(r)
    sig = _check_signature(top["signature"])
    if r["kid"] != top["signature"]["kid"]:
        raise VerifyError("key", "key_mismatch")
    key = keys.lookup(r["kid"]) if keys is not None else None
    if key is None:
        raise VerifyError("key", "unknown_key", f"kid {json.dumps(shorten(r['kid']))}")
    if key.not_before is not None and signed_at < key.not_before:
        raise VerifyError("window", "outside_window",
                          f"signed_at {r['signed_at']} is before the key's window opens at {_format_ns(key.not_before)}")
    if key.signs_until is not None and signed_at >= key.signs_until:
        raise VerifyError("window", "outside_window",
                          f"signed_at {r['signed_at']} is not before the key's window closed at {_format_ns(key.signs_until)}")
    if key.revoked_at is not None and signed_at >= key.revoked_at:
        raise VerifyError("revocation", "revoked",
                          f"key revoked at {_format_ns(key.revoked_at)}, receipt signed at {r['signed_at']}")
    if key.revoked_at is None and key.status == "revoked":
        raise VerifyError("revocation", "revoked", "key is revoked and its revocation time is unknown")
    try:
        if key.public_key is None:
            raise InvalidSignature
        key.public_key.verify(sig, canonicalize(r).encode("utf-8"))
    except InvalidSignature:
        raise VerifyError("signature", "bad_signature") from None
    present = "payload" in top
    # Both digests are public; the constant-time compare is a habit that
    # costs nothing.
    if present and not hmac.compare_digest(payload_digest(top["payload"]).encode(), r["payload_sha256"].encode("utf-8")):
        raise VerifyError("payload", "payload_digest")
    return VerifiedReceipt(
        receipt=to_plain(r),
        payload=to_plain(top["payload"]) if present else None,
        payload_present=present,
        key_id=key.kid,
    )


__all__ = ["MAX_ENVELOPE_SIZE", "VerifiedReceipt", "payload_digest", "verify_receipt", "Number"]
