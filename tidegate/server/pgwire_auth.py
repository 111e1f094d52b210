"""SCRAM-SHA-256 password authentication, the server side (RFC 5802, RFC 7677).

The server holds one password. :class:`ScramVerifier` derives the stored and
server keys once (PBKDF2 with a random salt); each login runs a
:class:`ScramExchange`: client-first → server-first → client-final (checked
proof) → server-final. Channel binding is not offered (no TLS), so the client's
GS2 header must be ``n,,`` or ``y,,``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["SCRAM_MECHANISM", "ScramExchange", "ScramFailure", "ScramVerifier"]

SCRAM_MECHANISM = "SCRAM-SHA-256"
SCRAM_ITERATIONS = 4096


class ScramFailure(Exception):
    """The client's SCRAM messages are malformed or its proof is wrong."""


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


class ScramVerifier:
    """The salted keys for one password; computed once per server."""

    def __init__(self, password: str, iterations: int = SCRAM_ITERATIONS) -> None:
        self.salt = secrets.token_bytes(16)
        self.iterations = iterations
        salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), self.salt, iterations)
        self.stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
        self.server_key = _hmac(salted, b"Server Key")


def _attributes(text: str) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramFailure(f"malformed SCRAM attribute {part!r}")
        attributes[part[0]] = part[2:]
    return attributes


class ScramExchange:
    """One SCRAM conversation with one client."""

    def __init__(self, verifier: ScramVerifier) -> None:
        self._verifier = verifier
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._gs2_header = ""

    def server_first(self, client_first: bytes) -> bytes:
        text = client_first.decode("utf-8")
        if not text.startswith(("n,", "y,")):
            raise ScramFailure("channel binding is not supported")
        header_end = text.index(",", 2) + 1
        self._gs2_header = text[:header_end]
        self._client_first_bare = text[header_end:]
        client_nonce = _attributes(self._client_first_bare).get("r")
        if not client_nonce:
            raise ScramFailure("client nonce is missing")
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        salt = base64.b64encode(self._verifier.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={self._verifier.iterations}"
        return self._server_first.encode("utf-8")

    def server_final(self, client_final: bytes) -> bytes:
        """Check the client's proof; returns the server-final message or raises ScramFailure."""
        text = client_final.decode("utf-8")
        without_proof, _, proof_part = text.rpartition(",p=")
        attributes = _attributes(without_proof)
        if attributes.get("r") != self._nonce:
            raise ScramFailure("nonce mismatch")
        if base64.b64decode(attributes.get("c", "")) != self._gs2_header.encode("utf-8"):
            raise ScramFailure("channel binding mismatch")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = _hmac(self._verifier.stored_key, auth_message)
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError as e:
            raise ScramFailure("malformed proof") from e
        if len(proof) != len(client_signature):
            raise ScramFailure("malformed proof")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self._verifier.stored_key):
            raise ScramFailure("wrong password")
        server_signature = _hmac(self._verifier.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)
