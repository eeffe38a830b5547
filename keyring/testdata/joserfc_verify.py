"""Verify sealpost receipt signatures with joserfc, an independent JOSE
implementation: fetch the JWKS over HTTP, check every kid against joserfc's
RFC 7638 thumbprint, verify the raw Ed25519 receipt signature with the
OKPKey found by kid, and verify a JWS compact (alg Ed25519, RFC 9864) signed with the same
key. Prints one JSON object with the results.

usage: joserfc_verify.py JWKS_URL CASES_JSON
"""
import base64
import json
import sys
import urllib.request

from joserfc import jws
from joserfc.jwk import KeySet


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main():
    url, cases_path = sys.argv[1], sys.argv[2]
    with urllib.request.urlopen(url) as r:
        jwks = json.load(r)
    keys = KeySet.import_key_set(jwks)
    out = {"kids": [], "thumbprints_match": True, "cases": []}
    for k in keys.keys:
        out["kids"].append(k.kid)
        if k.kid != k.thumbprint():
            out["thumbprints_match"] = False
    with open(cases_path) as f:
        cases = json.load(f)
    for c in cases:
        res = {"name": c["name"], "raw": False, "jws": False}
        env = json.loads(c["envelope"])
        # JCS of a receipt (ASCII member names, strings and integers only) is
        # the sorted, whitespace-free JSON text.
        signing_input = json.dumps(env["receipt"], separators=(",", ":"),
                                   sort_keys=True, ensure_ascii=False).encode()
        kid = env["signature"]["kid"]
        try:
            key = keys.get_by_kid(kid)
            key.public_key.verify(b64d(env["signature"]["sig"]), signing_input)
            res["raw"] = True
        except Exception as e:  # noqa: BLE001 - report any failure
            res["raw_error"] = type(e).__name__
        try:
            obj = jws.deserialize_compact(c["jws"], keys, algorithms=["Ed25519"])
            res["jws"] = obj.headers().get("kid") == kid
        except Exception as e:  # noqa: BLE001
            res["jws_error"] = type(e).__name__
        out["cases"].append(res)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
