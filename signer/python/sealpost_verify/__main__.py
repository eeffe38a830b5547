"""sealpost-verify: verify a sealpost receipt envelope or a captured webhook.

    sealpost-verify receipt ENVELOPE.json --jwks FILE|URL [--cacert FILE]
    sealpost-verify webhook --body FILE --id ID --timestamp TS --signature SIG
                            [--jwks FILE|URL] [--secret whsec_...]... [--tolerance SECONDS] [--cacert FILE]

Prints "OK ..." and exits 0, or "FAILED verify ...: <step>: <code>..." and
exits 1; exits 2 on a usage error. A secret may also come from the
environment variable SEALPOST_WEBHOOK_SECRET, which keeps it out of the
process list.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .errors import KeySetError, VerifyError
from .jwks import JwksClient
from .keys import MAX_KEY_SET_SIZE, KeySet, parse_key_set
from .receipt import MAX_ENVELOPE_SIZE, VerifiedReceipt, verify_receipt
from .webhook import DEFAULT_TOLERANCE_SECONDS, verify_webhook


def _read(path: str, limit: int, what: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SystemExit(f"{what} {path} is larger than {limit} bytes")
    return data


def _keys(src: str, cacert: Optional[str]) -> KeySet:
    if src.startswith(("https://", "http://")):
        loopback = src.startswith(("http://127.", "http://localhost"))
        return JwksClient(src, cafile=cacert, allow_http=loopback).key_set()
    return parse_key_set(_read(src, MAX_KEY_SET_SIZE, "key set"))


def _describe(v: VerifiedReceipt) -> str:
    r = v.receipt
    return (f"OK {r['id']} tenant {r['tenant']} key {v.key_id} signed_at {r['signed_at']} "
            f"payload {'checked' if v.payload_present else 'absent'}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sealpost-verify", description="Verify sealpost receipts and webhooks.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receipt", help="verify a receipt envelope offline")
    r.add_argument("envelope")
    r.add_argument("--jwks", required=True, help="JWKS or key history: a file or an https URL")
    r.add_argument("--cacert", help="CA certificate for an https --jwks")
    w = sub.add_parser("webhook", help="verify a captured webhook request")
    w.add_argument("--body", required=True)
    w.add_argument("--id", required=True)
    w.add_argument("--timestamp", required=True)
    w.add_argument("--signature", required=True)
    w.add_argument("--jwks", help="JWKS or key history: a file or an https URL")
    w.add_argument("--secret", action="append", help="whsec_ endpoint secret (repeatable)")
    w.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_SECONDS, help="seconds, default 300")
    w.add_argument("--cacert", help="CA certificate for an https --jwks")
    args = p.parse_args(argv)
    try:
        if args.cmd == "receipt":
            keys = _keys(args.jwks, args.cacert)
            print(_describe(verify_receipt(_read(args.envelope, MAX_ENVELOPE_SIZE, "envelope"), keys)))
            return 0
        secrets = args.secret or ([os.environ["SEALPOST_WEBHOOK_SECRET"]] if os.environ.get("SEALPOST_WEBHOOK_SECRET") else [])
        if not args.jwks and not secrets:
            p.error("webhook needs --jwks or --secret")
        if not args.tolerance > 0:
            p.error("--tolerance must be a positive number of seconds")
        got = verify_webhook(
            {"webhook-id": args.id, "webhook-timestamp": args.timestamp, "webhook-signature": args.signature},
            _read(args.body, MAX_ENVELOPE_SIZE, "body"),
            keys=_keys(args.jwks, args.cacert) if args.jwks else None,
            secrets=secrets,
            tolerance=args.tolerance,
        )
        print(_describe(got.receipt) if got.receipt else f"OK webhook {got.id} (v1 only: the receipt was not verified)")
        return 0
    except VerifyError as e:
        print(f"FAILED {e}" + (f" ({e.cause})" if e.cause else ""))
        return 1
    except (KeySetError, ValueError, OSError) as e:
        print(str(e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
