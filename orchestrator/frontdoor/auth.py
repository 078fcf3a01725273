"""API keys for the front door: ``Authorization: Bearer <key>``, as KServe and most gateways take it.

Keys are configured as SHA-256 hex digests (never the keys themselves), from ``--api-key-sha256`` or
the ``MARK_API_KEY_SHA256`` environment variable (comma-separated). A presented key is hashed and
compared with every configured digest by ``hmac.compare_digest`` (constant time, no early exit), so
neither timing nor logs reveal a key. Health routes stay open for load balancers (inference/v2.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable

from inference.asgi import Scope
from inference.errors import Unauthorized

API_KEYS_ENV = "MARK_API_KEY_SHA256"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHALLENGE = (("www-authenticate", 'Bearer realm="mark"'),)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest to configure for ``key`` (same as ``printf %s KEY | sha256sum``)."""
    return hashlib.sha256(key.encode()).hexdigest()


HASH_HINT = "printf %s KEY | sha256sum | cut -d' ' -f1"


def parse_digests(values: Iterable[str], source: str = "--api-key-sha256") -> tuple[str, ...]:
    """Configured digests, lower-cased; ``source`` names where they came from in errors.

    Raises:
        ValueError: a value is not 64 hex characters (naming its position, never echoing a secret
            that was pasted by mistake in place of its hash).
    """
    out = []
    for i, raw in enumerate(v.strip().lower() for v in values):
        if not raw:
            continue
        if not _DIGEST.match(raw):
            raise ValueError(
                f"{source}: API key digest #{i + 1} is not a SHA-256 hex digest (64 characters 0-9a-f); "
                f"configure the hash of each key ({HASH_HINT}), not the key"
            )
        out.append(raw)
    return tuple(out)


def digests_from_env() -> tuple[str, ...]:
    """Digests from ``MARK_API_KEY_SHA256``; unset or empty means none.

    Raises:
        ValueError: set but holding no digest (e.g. ",,"): a typo must not turn authentication off.
    """
    raw = os.environ.get(API_KEYS_ENV, "")
    digests = parse_digests(raw.split(","), API_KEYS_ENV)
    if raw and not digests:
        raise ValueError(f"{API_KEYS_ENV} is set but holds no digest; unset it or give SHA-256 hex digests")
    return digests


class ApiKeys:
    """Checks the bearer key of a request; counts refusals (``failures``) for /metrics."""

    def __init__(self, digests: Iterable[str]) -> None:
        self.digests = tuple(digests)
        if not self.digests:
            raise ValueError("ApiKeys needs at least one digest")
        self.failures = 0

    def __call__(self, scope: Scope) -> None:
        """Raises Unauthorized (401 with WWW-Authenticate) when the key is missing or wrong."""
        values = [bytes(v) for k, v in scope["headers"] if k == b"authorization"]
        scheme, _, key = (values[0] if values else b"").partition(b" ")
        key = key.strip(b" \t")
        # the key's bytes as sent (UTF-8 from any client): hashed like printf %s KEY | sha256sum
        presented = hashlib.sha256(key).hexdigest() if key else ""
        ok = False
        for d in self.digests:  # compare with all, so the time taken does not tell which one matched
            ok |= hmac.compare_digest(presented.encode(), d.encode())
        if len(values) > 1:
            problem = f"Authorization is given {len(values)} times; send it once"
        elif values and scheme.lower() != b"bearer":
            problem = "Authorization must be 'Bearer <key>'"  # the scheme is not echoed: a bare key would be
        elif not ok:
            problem = f"{'wrong' if presented else 'missing'} API key: send 'Authorization: Bearer <key>'"
        else:
            return
        self.failures += 1
        raise Unauthorized(problem, headers=CHALLENGE)
