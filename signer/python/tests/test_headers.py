"""The forms a webhook's headers come in, and bad options."""

import json
import os
import unittest

from sealpost_verify import VerifyError, parse_key_set, verify_webhook

with open(os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "vectors", "webhooks.json"), encoding="utf-8") as f:
    VECTORS = json.load(f)
CASE = next(c for c in VECTORS["cases"] if c["name"] == "valid v1a and v1")
KEYS = parse_key_set(VECTORS["key_sets"][CASE["key_set"]])


class Headers(unittest.TestCase):
    def test_forms(self):
        h = CASE["headers"]
        capitalized = {"Webhook-Id": h["webhook-id"], "WEBHOOK-TIMESTAMP": h["webhook-timestamp"], "Webhook-Signature": h["webhook-signature"]}
        as_bytes = {k.encode(): v.encode() for k, v in h.items()}
        for headers in (dict(h), capitalized, as_bytes):
            with self.subTest(headers=list(headers)):
                got = verify_webhook(headers, CASE["body"].encode(), keys=KEYS, secrets=CASE["secrets"], now=CASE["now"])
                self.assertEqual(got.id, h["webhook-id"])
        with self.assertRaises(VerifyError) as ctx:
            verify_webhook({}, CASE["body"].encode(), keys=KEYS, now=CASE["now"])
        self.assertEqual((ctx.exception.step, ctx.exception.code), ("headers", "malformed"))

    def test_options(self):
        with self.assertRaises(ValueError):
            verify_webhook(CASE["headers"], CASE["body"].encode())
        for secret in ("abc", "whsec_", "whsec_AAAA", "whsec_" + "!" * 24, "whsec_" + "A" * 100):
            with self.subTest(secret=secret), self.assertRaises(ValueError) as ctx:
                verify_webhook(CASE["headers"], CASE["body"].encode(), secrets=[secret])
            if len(secret) > 8:
                self.assertNotIn(secret[6:], str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
