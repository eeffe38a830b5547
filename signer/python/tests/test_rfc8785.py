"""The RFC 8785 examples and appendix B numbers of signer/testdata/jcs, which
Go's signer package runs too."""

import os
import struct
import unittest

from sealpost_verify import JSONError, canonicalize_text, format_number

JCS = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "jcs")

# values.in.json writes the double 333333333.3333333 as 333333333.33333329,
# another decimal value: sealpost refuses it as a lossy number.
LOSSY = {"values": "333333333.33333329"}


class RFC8785(unittest.TestCase):
    def test_examples(self):
        names = sorted(f[: -len(".in.json")] for f in os.listdir(JCS) if f.endswith(".in.json"))
        self.assertGreaterEqual(len(names), 6)
        for name in names:
            with self.subTest(name):
                with open(os.path.join(JCS, name + ".in.json"), "rb") as f:
                    doc = f.read()
                if name in LOSSY:
                    with self.assertRaises(JSONError) as ctx:
                        canonicalize_text(doc)
                    self.assertEqual(ctx.exception.code, "lossy_number")
                    self.assertIn(LOSSY[name], str(ctx.exception))
                    continue
                with open(os.path.join(JCS, name + ".out.json"), encoding="utf-8") as f:
                    want = f.read()
                self.assertEqual(canonicalize_text(doc), want)
                self.assertEqual(canonicalize_text(want), want)

    def test_numbers(self):
        with open(os.path.join(JCS, "numbers.txt"), encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line and not line.startswith("#")]
        self.assertGreaterEqual(len(lines), 20)
        for line in lines:
            bits, want = line.split(",")
            with self.subTest(bits):
                v = struct.unpack(">d", bytes.fromhex(bits))[0]
                if want == "":
                    with self.assertRaises(JSONError):
                        format_number(v)
                else:
                    self.assertEqual(format_number(v), want)


if __name__ == "__main__":
    unittest.main()
