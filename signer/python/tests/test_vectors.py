"""The shared vectors of signer/testdata/vectors, which Go's signer package and
the JavaScript kit run too."""

import base64
import json
import math
import os
import struct
import unittest

from sealpost_verify import (
    JSONError,
    KeySetError,
    VerifyError,
    canonicalize_text,
    format_number,
    parse_key_set,
    verify_receipt,
    verify_webhook,
)

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "vectors")


def load(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)


def data(case, text, b64):
    if case.get(b64):
        return base64.b64decode(case[b64])
    return case.get(text, "").encode("utf-8")


class Vectors(unittest.TestCase):
    def outcome(self, want, run):
        if want["ok"]:
            got = run()
            v = getattr(got, "receipt", None) if hasattr(got, "timestamp") else got
            if "receipt_id" in want:
                self.assertEqual(v.receipt["id"], want["receipt_id"])
            if "key_id" in want:
                self.assertEqual(v.key_id, want["key_id"])
            if "payload_present" in want:
                self.assertEqual(v.payload_present, want["payload_present"])
            return
        with self.assertRaises(VerifyError) as ctx:
            run()
        e = ctx.exception
        self.assertEqual(f"{e.code} at {e.step}", f"{want['error']} at {want['step']}", str(e))
        self.assertEqual(e.cause, want.get("cause"), str(e))

    def test_receipts(self):
        f = load("receipts.json")
        sets = {name: parse_key_set(doc) for name, doc in f["key_sets"].items()}
        for c in f["cases"]:
            with self.subTest(c["name"]):
                self.outcome(c["expect"], lambda: verify_receipt(data(c, "envelope", "envelope_base64"), sets[c["key_set"]]))

    def test_webhooks(self):
        f = load("webhooks.json")
        sets = {name: parse_key_set(doc) for name, doc in f["key_sets"].items()}
        for c in f["cases"]:
            with self.subTest(c["name"]):
                def run():
                    got = verify_webhook(
                        c["headers"],
                        c["body"].encode("utf-8"),
                        keys=sets[c["key_set"]] if c.get("key_set") else None,
                        secrets=c.get("secrets") or (),
                        tolerance=c.get("tolerance_seconds") or 300,
                        now=c["now"],
                    )
                    self.assertEqual(got.id, c["headers"]["webhook-id"])
                    self.assertEqual(str(got.timestamp), c["headers"]["webhook-timestamp"])
                    if not c.get("key_set"):
                        self.assertIsNone(got.receipt)
                    return got
                self.outcome(c["expect"], run)

    def test_jcs(self):
        f = load("jcs.json")
        for c in f["cases"]:
            with self.subTest(c["name"]):
                doc = data(c, "input", "input_base64")
                if c["expect"]["ok"]:
                    self.assertEqual(canonicalize_text(doc), c["expect"]["output"])
                else:
                    with self.assertRaises(JSONError) as ctx:
                        canonicalize_text(doc)
                    self.assertEqual(ctx.exception.code, c["expect"]["error"])

    def test_numbers(self):
        numbers = load("jcs.json")["numbers"]
        self.assertGreaterEqual(len(numbers), 800)
        for bits, text in numbers:
            with self.subTest(bits):
                v = struct.unpack(">d", bytes.fromhex(bits))[0]
                self.assertEqual(format_number(v), text)
                back = float(text)
                self.assertTrue(struct.pack(">d", back).hex() == bits or (back == 0 and v == 0 and not math.copysign(1, v) > 0))
                self.assertEqual(canonicalize_text(text), text)

    def test_key_sets(self):
        for c in load("keysets.json")["cases"]:
            with self.subTest(c["name"]):
                if c["expect"]["ok"]:
                    self.assertEqual([k.kid for k in parse_key_set(c["document"]).keys], c["expect"].get("kids", []))
                else:
                    with self.assertRaises(KeySetError):
                        parse_key_set(c["document"])


if __name__ == "__main__":
    unittest.main()
