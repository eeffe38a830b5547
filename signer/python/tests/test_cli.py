"""The command-line verifier, run as a user would run it."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(__file__)
VECTORS = os.path.join(HERE, "..", "..", "testdata", "vectors")


def load(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)


class CLI(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def file(self, name, content):
        path = os.path.join(self.dir.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        return path

    def run_cli(self, *args):
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.path.join(HERE, "..")}
        return subprocess.run([sys.executable, "-m", "sealpost_verify", *args], capture_output=True, text=True, timeout=60, env=env)

    def test_receipt(self):
        f = load("receipts.json")
        jwks = self.file("jwks.json", f["key_sets"]["jwks_2026q4"])
        case = lambda name: next(c for c in f["cases"] if c["name"] == name)
        r = self.run_cli("receipt", self.file("ok.json", case("valid")["envelope"]), "--jwks", jwks)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"^OK rcpt_\S+ tenant acme key \S+ signed_at \S+ payload checked")
        r = self.run_cli("receipt", self.file("bad.json", case("tampered payload")["envelope"]), "--jwks", jwks)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout, r"^FAILED verify receipt: payload: payload_digest")

    def test_webhook(self):
        f = load("webhooks.json")
        c = next(c for c in f["cases"] if c["name"] == "valid v1a and v1")
        h = c["headers"]
        args = ["webhook", "--body", self.file("body.json", c["body"]), "--id", h["webhook-id"],
                "--timestamp", h["webhook-timestamp"], "--signature", h["webhook-signature"]]
        century = str(100 * 365 * 86400)  # the vector's timestamp is long past
        r = self.run_cli(*args, "--jwks", self.file("jwks.json", f["key_sets"]["jwks_2026q4"]), "--secret", c["secrets"][0], "--tolerance", century)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"^OK rcpt_")
        r = self.run_cli(*args, "--secret", c["secrets"][0], "--tolerance", century)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("v1 only", r.stdout)
        r = self.run_cli(*args, "--jwks", self.file("jwks.json", f["key_sets"]["jwks_2026q4"]))
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout, r"^FAILED verify webhook: timestamp: outside_tolerance")

    def test_usage(self):
        for args in ([], ["nope"], ["receipt", "x.json"], ["webhook", "--body", "x"]):
            with self.subTest(args):
                self.assertEqual(self.run_cli(*args).returncode, 2)


if __name__ == "__main__":
    unittest.main()
