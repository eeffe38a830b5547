"""Errors of the kit.

Every verification failure is a VerifyError naming the step that failed and
an error code; the codes and steps are those of the shared test vectors in
signer/testdata/vectors and of Go's signer package.
"""

from __future__ import annotations

from typing import Optional

WEBHOOK_STEPS = frozenset({"headers", "timestamp", "v1a", "v1"})


class VerifyError(Exception):
    """A verification failure.

    step: envelope, receipt, signature, key, window, revocation, payload (the
    receipt envelope), or headers, timestamp, v1a, v1 (the webhook).
    code: malformed, unknown_key, key_mismatch, outside_window, revoked,
    bad_signature, payload_digest, outside_tolerance, id_mismatch.
    cause: "lossy_number" when a number that does not survive an IEEE-754
    double is the reason, else None.
    """

    def __init__(self, step: str, code: str, detail: str = "", cause: Optional[str] = None):
        what = "verify webhook" if step in WEBHOOK_STEPS else "verify receipt"
        super().__init__(f"{what}: {step}: {code}" + (f": {detail}" if detail else ""))
        self.step = step
        self.code = code
        self.cause = cause


class JSONError(ValueError):
    """A document that is not JSON as JCS (RFC 8785) accepts it.

    code: "malformed", or "lossy_number" for a number whose value JCS would
    change.
    """

    def __init__(self, code: str, detail: str):
        what = (
            "number does not survive the round trip through an IEEE-754 double"
            if code == "lossy_number"
            else "invalid JSON"
        )
        super().__init__(f"{what}: {detail}")
        self.code = code


class KeySetError(ValueError):
    """A JWKS or key-history document that is refused, or could not be fetched."""

    def __init__(self, detail: str):
        super().__init__(f"invalid key set: {detail}")


def shorten(s: object) -> str:
    """Keeps untrusted text short before it goes into an error message."""
    s = str(s)
    return s[:40] + "..." if len(s) > 40 else s
