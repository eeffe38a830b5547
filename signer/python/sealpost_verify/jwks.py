"""Fetching and caching sealpost's keys, and a webhook verifier that refreshes
them when a receipt names a key it does not know."""

from __future__ import annotations

import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Optional, Sequence, TypeVar

from .errors import KeySetError, VerifyError
from .keys import MAX_KEY_SET_SIZE, KeySet, parse_key_set
from .receipt import VerifiedReceipt, verify_receipt
from .webhook import DEFAULT_TOLERANCE_SECONDS, VerifiedWebhook, verify_webhook

_MAX_AGE_CAP = 3600.0
_DEFAULT_MAX_AGE = 300.0

T = TypeVar("T")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        raise urllib.error.HTTPError(req.full_url, code, "redirects are not followed", headers, fp)


def _max_age(cache_control: Optional[str]) -> float:
    if not cache_control:
        return _DEFAULT_MAX_AGE
    if re.search(r"(^|[,\s])(no-cache|no-store)\b", cache_control, re.I):
        return 0.0
    m = re.search(r"(?:^|[,\s])max-age=([0-9]+)", cache_control, re.I)
    return min(float(m.group(1)), _MAX_AGE_CAP) if m else _DEFAULT_MAX_AGE


class JwksClient:
    """Fetches a JWKS (or the key history, /v1/keys) with urllib.

    It caches the keys as Cache-Control says (at most an hour, revalidating
    with ETag), refetches at most once per min_refresh_interval seconds when
    asked to refresh (a receipt names an unknown kid), refuses bodies over
    max_bytes and redirects, and gives up after timeout seconds. When a
    refetch fails, the keys fetched before stay in use. For a private CA,
    pass cafile or an ssl_context.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refresh_interval: float = 60.0,
        max_bytes: int = MAX_KEY_SET_SIZE,
        timeout: float = 10.0,
        cafile: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        allow_http: bool = False,
        proxies: Optional[dict] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not (url.startswith("https://") or (allow_http and url.startswith("http://"))):
            raise ValueError(f"jwks url must be https: {url}")
        self.url = url
        self.min_refresh_interval = min_refresh_interval
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.clock = clock
        context = ssl_context or ssl.create_default_context(cafile=cafile)
        handlers: list = [urllib.request.HTTPSHandler(context=context), _NoRedirect()]
        if proxies is not None:
            handlers.append(urllib.request.ProxyHandler(proxies))
        self._opener = urllib.request.build_opener(*handlers)
        self._lock = threading.Lock()
        self._keys: Optional[KeySet] = None
        self._etag: Optional[str] = None
        self._expires_at = 0.0
        self._fetched_at = float("-inf")
        self.fetches = 0
        """The requests made so far."""

    def key_set(self) -> KeySet:
        """Returns the cached KeySet, fetching it when there is none or it expired."""
        with self._lock:
            if self._keys is not None and self.clock() < self._expires_at:
                return self._keys
            return self._load()

    def refresh(self) -> bool:
        """Refetches the keys unless they were fetched less than
        min_refresh_interval seconds ago. Returns whether it fetched."""
        with self._lock:
            if self.clock() - self._fetched_at < self.min_refresh_interval:
                return False
            self._load()
            return True

    def _load(self) -> KeySet:
        self._fetched_at = self.clock()
        self.fetches += 1
        try:
            return self._fetch()
        except Exception as e:
            if self._keys is not None:
                return self._keys  # keep verifying with the keys fetched before
            if isinstance(e, KeySetError):
                raise
            raise KeySetError(f"GET {self.url}: {e}") from None

    def _fetch(self) -> KeySet:
        req = urllib.request.Request(self.url, headers={"Accept": "application/jwk-set+json, application/json"})
        if self._etag and self._keys is not None:
            req.add_header("If-None-Match", self._etag)
        try:
            resp = self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            with e:
                if e.code == 304 and self._keys is not None:
                    self._expires_at = self.clock() + _max_age(e.headers.get("Cache-Control"))
                    return self._keys
                raise KeySetError(f"GET {self.url}: HTTP {e.code}") from None
        with resp:
            if resp.status != 200:
                raise KeySetError(f"GET {self.url}: HTTP {resp.status}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise KeySetError(f"response of {declared} bytes exceeds the limit of {self.max_bytes}")
            body = resp.read(self.max_bytes + 1)
            if len(body) > self.max_bytes:
                raise KeySetError(f"response exceeds the limit of {self.max_bytes} bytes")
            keys = parse_key_set(body)
            self._keys, self._etag = keys, resp.headers.get("ETag")
            self._expires_at = self.clock() + _max_age(resp.headers.get("Cache-Control"))
            return keys


def _should_refresh(e: Exception) -> bool:
    return isinstance(e, VerifyError) and (e.code == "unknown_key" or e.step == "v1a")


def _with_refresh(client: JwksClient, verify: Callable[[KeySet], T]) -> T:
    try:
        return verify(client.key_set())
    except VerifyError as e:
        if not _should_refresh(e) or not client.refresh():
            raise
        return verify(client.key_set())


class WebhookVerifier:
    """Verifies webhooks against a JWKS URL (a JwksClient is made for it) or a
    JwksClient, and optionally whsec_ secrets. When a receipt names an
    unknown kid, or no v1a signature verifies, it refreshes the keys once (at
    most once a minute) and tries again."""

    def __init__(
        self,
        jwks: Any,
        secrets: Sequence[str] = (),
        tolerance: float = DEFAULT_TOLERANCE_SECONDS,
        **client_options: Any,
    ):
        self.client = jwks if isinstance(jwks, JwksClient) else JwksClient(jwks, **client_options)
        self.secrets = list(secrets)
        self.tolerance = tolerance

    def verify(self, headers: Any, body: Any, now: Optional[float] = None) -> VerifiedWebhook:
        """Checks one request; see verify_webhook."""
        return _with_refresh(self.client, lambda keys: verify_webhook(
            headers, body, keys=keys, secrets=self.secrets, tolerance=self.tolerance, now=now))

    def verify_receipt(self, envelope: Any) -> VerifiedReceipt:
        """Checks a stored envelope with the same keys; see verify_receipt."""
        return _with_refresh(self.client, lambda keys: verify_receipt(envelope, keys))
