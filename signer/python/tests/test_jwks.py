"""JwksClient and WebhookVerifier against a JWKS server on the loopback
interface: caching, refresh on an unknown kid, the bounded refresh rate,
revalidation, the size limit, redirects and timeouts."""

import json
import os
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sealpost_verify import JwksClient, KeySetError, VerifyError, WebhookVerifier

with open(os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "vectors", "webhooks.json"), encoding="utf-8") as f:
    VECTORS = json.load(f)
SETS = VECTORS["key_sets"]
GRACE = next(c for c in VECTORS["cases"] if c["name"] == "during grace: the receipt's key left the receiver's key set")


class Clock:
    """A fake clock for the client's intervals and expiry."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def serve(doc, **headers):
    def respond(h):
        body = doc.encode("utf-8")
        h.send_response(200)
        h.send_header("Content-Type", "application/jwk-set+json")
        h.send_header("Cache-Control", headers.get("cache_control", "public, max-age=3600"))
        if "etag" in headers:
            h.send_header("ETag", headers["etag"])
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return respond


class Server(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.requests = []
        test = cls

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                test.requests.append(self.headers.get("If-None-Match"))
                test.respond(self)

            def log_message(self, *args):
                pass

        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.server.daemon_threads = True
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.url = f"http://127.0.0.1:{cls.server.server_address[1]}/.well-known/jwks.json"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def client(self, **kw):
        return JwksClient(self.url, allow_http=True, proxies={}, **kw)


class JwksClientTest(Server):
    def test_caches_for_max_age(self):
        type(self).respond = staticmethod(serve(SETS["jwks_2026q4"]))
        clock = Clock()
        c = self.client(clock=clock)
        first = c.key_set()
        self.assertEqual(len(first.keys), 2)
        self.assertIs(c.key_set(), first)
        clock.t += 3599
        c.key_set()
        self.assertEqual(c.fetches, 1)
        clock.t += 2
        c.key_set()
        self.assertEqual(c.fetches, 2)

    def test_revalidates_with_etag(self):
        def respond(h):
            if h.headers.get("If-None-Match") == '"v1"':
                h.send_response(304)
                h.send_header("ETag", '"v1"')
                h.send_header("Cache-Control", "no-cache")
                h.end_headers()
                return
            serve(SETS["jwks_2026q4"], etag='"v1"', cache_control="no-cache")(h)
        type(self).respond = staticmethod(respond)
        self.requests.clear()
        c = self.client()
        first = c.key_set()
        self.assertIs(c.key_set(), first)
        self.assertEqual(self.requests, [None, '"v1"'])

    def test_size_limit(self):
        big = '{"keys":[],"pad":"' + "a" * (2 << 20) + '"}'
        type(self).respond = staticmethod(serve(big))
        with self.assertRaisesRegex(KeySetError, "limit"):
            self.client().key_set()

        def chunked(h):  # no Content-Length: the body is cut off as it is read
            h.send_response(200)
            h.send_header("Connection", "close")
            h.end_headers()
            try:
                h.wfile.write(big.encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading at its limit
        type(self).respond = staticmethod(chunked)
        with self.assertRaisesRegex(KeySetError, "limit of 4096"):
            self.client(max_bytes=4096).key_set()

    def test_refuses_redirects_errors_and_invalid_sets(self):
        def redirect(h):
            h.send_response(302)
            h.send_header("Location", self.url + "x")
            h.end_headers()
        for respond, pattern in [(redirect, "302"), (lambda h: h.send_error(500), "HTTP 500"), (serve('{"keys":[{"kty":"OKP"}]}'), "key 0")]:
            type(self).respond = staticmethod(respond)
            with self.assertRaisesRegex(KeySetError, pattern):
                self.client().key_set()

    def test_keeps_keys_when_refetch_fails(self):
        type(self).respond = staticmethod(serve(SETS["jwks_2026q4"], cache_control="no-cache"))
        c = self.client()
        first = c.key_set()
        type(self).respond = staticmethod(lambda h: h.send_error(503))
        self.assertIs(c.key_set(), first)

    def test_timeout(self):
        type(self).respond = staticmethod(lambda h: time.sleep(3))
        t0 = time.monotonic()
        with self.assertRaises(KeySetError):
            self.client(timeout=0.2).key_set()
        self.assertLess(time.monotonic() - t0, 2.5)

    def test_wants_https(self):
        with self.assertRaises(ValueError):
            JwksClient(self.url)


class WebhookVerifierTest(Server):
    def test_refreshes_on_unknown_kid_at_most_once_a_minute(self):
        # The receiver's cache holds only the new key; the receipt, a retry
        # after a rotation, was signed by the previous one.
        doc = {"set": SETS["jwks_b_only"]}
        type(self).respond = staticmethod(lambda h: serve(doc["set"])(h))
        clock = Clock()
        c = self.client(clock=clock)
        v = WebhookVerifier(c)
        request = lambda: v.verify(GRACE["headers"], GRACE["body"].encode(), now=GRACE["now"])

        c.key_set()
        doc["set"] = SETS["jwks_2027q1"]
        clock.t += 61
        self.assertEqual(request().receipt.receipt["id"], GRACE["headers"]["webhook-id"])
        self.assertEqual(c.fetches, 2)

        doc["set"] = SETS["jwks_b_only"]
        clock.t += 3601
        c.key_set()  # the cache loses the key again
        for _ in range(5):
            with self.assertRaises(VerifyError) as ctx:
                request()
            self.assertEqual(ctx.exception.code, "unknown_key")
        self.assertEqual(c.fetches, 3)
        clock.t += 61
        with self.assertRaises(VerifyError):
            request()
        self.assertEqual(c.fetches, 4)


if __name__ == "__main__":
    unittest.main()
