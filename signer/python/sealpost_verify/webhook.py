"""Webhook verification: the Standard Webhooks headers as sealpost sends them,
checked as Go's signer.VerifyWebhook checks them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from cryptography.exceptions import InvalidSignature

from .errors import VerifyError
from .keys import KeySet, PublicKey, unb64std
from .receipt import MAX_ENVELOPE_SIZE, VerifiedReceipt, to_bytes, verify_receipt

DEFAULT_TOLERANCE_SECONDS = 300
"""How far webhook-timestamp may lie from the clock, either way."""
MAX_SIGNATURE_HEADER = 8 << 10
"""The longest webhook-signature header, in bytes."""
MAX_ID_LENGTH = 256
"""The longest webhook-id, in bytes."""

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SPACE = re.compile(r"[ \t\n\v\f\r]+")
_B64STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True)
class VerifiedWebhook:
    id: str
    """webhook-id: the receipt id, the same on every retry. Dedupe on it."""
    timestamp: int
    """webhook-timestamp, in Unix seconds."""
    receipt: Optional[VerifiedReceipt]
    """The verified receipt, or None when no keys were given."""


def decode_secret(secret: str, index: int = 0) -> bytearray:
    """Decodes a whsec_ secret to its key bytes. The ValueError never contains the secret."""
    enc = secret[6:] if isinstance(secret, str) and secret.startswith("whsec_") else None
    key = None
    if enc is not None and _B64STD.fullmatch(enc) and len(enc) % 4 == 0:
        try:
            key = bytearray(base64.b64decode(enc, validate=True))
        except binascii.Error:
            key = None
    if key is None or not 16 <= len(key) <= 64:
        raise ValueError(f"secret {index} is not whsec_ and the base64 of 16 to 64 bytes")
    return key


def _header(headers: Any, name: str) -> str:
    """Reads a header from a Mapping, a WSGI/ASGI-style headers object or a dict, ignoring case."""
    v = None
    get = getattr(headers, "get", None)
    if get is not None:
        v = get(name)
        if v is None and hasattr(headers, "items"):
            for k, val in headers.items():
                k = k.decode("latin-1") if isinstance(k, bytes) else k
                if k.lower() == name:
                    v = val
                    break
    if isinstance(v, bytes):
        v = v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        v = ", ".join(v)
    return v if isinstance(v, str) else ""


def _entries(value: str, version: str, size: int) -> List[bytes]:
    out = []
    for entry in _SPACE.split(value):
        v, comma, sig64 = entry.partition(",")
        if not comma or v != version:
            continue
        sig = unb64std(sig64)
        if sig is not None and len(sig) == size:
            out.append(sig)
    return out


def _signs_webhooks_at(k: PublicKey, ns: int) -> bool:
    """Whether k may have signed a webhook at ns: from nbf until exp (the
    current key, and the previous one during its grace period), never from
    its revocation."""
    if k.not_before is not None and ns < k.not_before:
        return False
    if k.expires is not None and ns >= k.expires:
        return False
    if k.revoked_at is not None and ns >= k.revoked_at:
        return False
    return not (k.revoked_at is None and k.status == "revoked")


def _ed25519(k: PublicKey, sig: bytes, data: bytes) -> bool:
    try:
        k.public_key.verify(sig, data)
        return True
    except InvalidSignature:
        return False


def verify_webhook(
    headers: Any,
    body: Any,
    keys: Optional[KeySet] = None,
    secrets: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: Optional[float] = None,
) -> VerifiedWebhook:
    """Checks a webhook request, in this order:

    1. webhook-id is 1 to 256 bytes, webhook-timestamp 1 to 12 digits,
       webhook-signature present and at most 8 KiB, the body at most 64 MiB;
    2. webhook-timestamp lies within tolerance seconds of now (default: the clock);
    3. with keys: a v1a entry is an Ed25519 signature over
       "{id}.{timestamp}.{body}" by a key that could sign at the timestamp;
    4. with secrets: a v1 entry is the HMAC-SHA256 of the same content with
       one of the whsec_ secrets (compared in constant time);
    5. with keys: the body is a receipt envelope that verify_receipt accepts,
       and its receipt id is webhook-id.

    body must be the raw bytes as received. Raises VerifyError, or ValueError
    for bad options.
    """
    if keys is None and not secrets:
        raise ValueError("verify webhook: no keys and no secrets to verify with")
    hmac_keys = [decode_secret(s, i) for i, s in enumerate(secrets)]
    try:
        return _check(headers, to_bytes(body), keys, hmac_keys, tolerance, time.time() if now is None else now)
    finally:
        for k in hmac_keys:
            k[:] = bytes(len(k))


def _check(headers: Any, data: bytes, keys: Optional[KeySet], hmac_keys: List[bytearray], tolerance: float, now: float) -> VerifiedWebhook:
    msg_id = _header(headers, "webhook-id")
    ts = _header(headers, "webhook-timestamp")
    sigs = _header(headers, "webhook-signature")
    if msg_id == "":
        raise VerifyError("headers", "malformed", "no webhook-id")
    if len(msg_id.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
        raise VerifyError("headers", "malformed", f"webhook-id is longer than {MAX_ID_LENGTH} bytes")
    if not _TIMESTAMP.fullmatch(ts):
        raise VerifyError("headers", "malformed", "webhook-timestamp is not 1 to 12 digits")
    if sigs == "":
        raise VerifyError("headers", "malformed", "no webhook-signature")
    if len(sigs.encode("utf-8", "surrogatepass")) > MAX_SIGNATURE_HEADER:
        raise VerifyError("headers", "malformed", f"webhook-signature is longer than {MAX_SIGNATURE_HEADER} bytes")
    if len(data) > MAX_ENVELOPE_SIZE:
        raise VerifyError("headers", "malformed", f"body is larger than {MAX_ENVELOPE_SIZE} bytes")

    seconds = int(ts)
    skew = now - seconds
    if not abs(skew) <= tolerance:
        raise VerifyError("timestamp", "outside_tolerance",
                          f"webhook-timestamp {ts} is {round(skew)}s from the clock, tolerance {tolerance}s")
    signed = f"{msg_id}.{ts}.".encode("utf-8", "surrogatepass") + data
    if keys is not None:
        at = seconds * 1_000_000_000
        candidates = [k for k in keys.keys if k.public_key is not None and _signs_webhooks_at(k, at)]
        if not any(_ed25519(k, sig, signed) for sig in _entries(sigs, "v1a", 64) for k in candidates):
            raise VerifyError("v1a", "bad_signature", "no valid v1a signature by a published key")
    if hmac_keys:
        got = _entries(sigs, "v1", 32)
        ok = False
        for key in hmac_keys:
            want = hmac.new(bytes(key), signed, hashlib.sha256).digest()
            for sig in got:
                ok = hmac.compare_digest(sig, want) or ok
        if not ok:
            raise VerifyError("v1", "bad_signature", "no valid v1 signature with the endpoint secrets")
    if keys is None:
        return VerifiedWebhook(id=msg_id, timestamp=seconds, receipt=None)
    receipt = verify_receipt(data, keys)
    if receipt.receipt["id"] != msg_id:
        raise VerifyError("headers", "id_mismatch", "webhook-id is not the receipt id")
    return VerifiedWebhook(id=msg_id, timestamp=seconds, receipt=receipt)
