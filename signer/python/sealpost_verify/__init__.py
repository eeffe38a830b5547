"""sealpost-verify: verify sealpost receipts and webhooks in Python.

Needs only the cryptography package. See docs/verify.md in the sealpost
repository.
"""

from .errors import JSONError, KeySetError, VerifyError
from .jcs import Number, canonicalize, canonicalize_text, format_number, parse_json
from .jwks import JwksClient, WebhookVerifier
from .keys import MAX_KEY_SET_SIZE, KeySet, PublicKey, parse_key_set, parse_time, thumbprint
from .receipt import MAX_ENVELOPE_SIZE, VerifiedReceipt, payload_digest, verify_receipt
from .webhook import (
    DEFAULT_TOLERANCE_SECONDS,
    MAX_ID_LENGTH,
    MAX_SIGNATURE_HEADER,
    VerifiedWebhook,
    decode_secret,
    verify_webhook,
)

__version__ = "1.0.0"

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "JSONError",
    "JwksClient",
    "KeySet",
    "KeySetError",
    "MAX_ENVELOPE_SIZE",
    "MAX_ID_LENGTH",
    "MAX_KEY_SET_SIZE",
    "MAX_SIGNATURE_HEADER",
    "Number",
    "PublicKey",
    "VerifiedReceipt",
    "VerifiedWebhook",
    "VerifyError",
    "WebhookVerifier",
    "canonicalize",
    "canonicalize_text",
    "decode_secret",
    "format_number",
    "parse_json",
    "parse_key_set",
    "parse_time",
    "payload_digest",
    "thumbprint",
    "verify_receipt",
    "verify_webhook",
]
