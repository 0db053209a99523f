"""Token service of the stand-in's authenticated upstream registry (distribution "token" auth).

The "upstream-auth" docker-registry (distribution 2.8, ``auth: token``) answers a request without
an acceptable token with ``401`` and ``WWW-Authenticate: Bearer realm="<this endpoint>",
service="<service>",scope="repository:<name>:pull"``. A client GETs the realm with ``service`` and
one or more ``scope`` query parameters, HTTP Basic credentials if it has some, and retries with
``Authorization: Bearer <token>``.

What this service grants
- valid Basic credentials (the configured user and password): the requested actions (pull, push,
  delete, ``*``) on every requested resource;
- no Authorization header: ``pull`` on repositories whose name starts with ``public_prefix``, and
  nothing else (the token is still issued, with empty actions, as Docker Hub does; the registry then
  answers 401 ``insufficient_scope``);
- wrong credentials or another scheme: 401 with a ``Basic`` challenge; an unknown ``service``: 400.

What distribution 2.8 checks in a token (registry/auth/token/token.go, ``Token.Verify``)
- a JWS in compact form whose header ``alg`` is one libtrust verifies (ES256/384/512, RS256/384/512);
- the signing key: an ``x5c`` header (base64 DER certificates, leaf first) whose chain verifies
  against ``rootcertbundle`` (any extended key usage), else a ``kid`` equal to the libtrust key id of
  a certificate in the bundle; here both are sent, signed by the certificate that *is* the bundle;
- ``iss`` one of the configured issuer, ``aud`` the configured service, ``exp``/``nbf`` within a
  60 s leeway of now (``iat`` and ``jti`` are carried but not checked);
- ``access``: ``[{"type": "repository", "name": R, "actions": [...]}]`` must contain the type,
  name and action the request needs (``pull`` for GET/HEAD, ``push`` for uploads).

Every answered request is recorded (``requests()``; ``GET /_devstack/upstream-token/requests``)
so tests can count token round trips. Passwords and tokens are never logged; the issued token is
kept on the in-process record only (``TokenRequest.token``, not in ``to_dict``) so that tests can
check it does not leak.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

PATH = "/_devstack/upstream-token"
KNOWN_ACTIONS = frozenset({"pull", "push", "delete", "*"})
DEFAULT_LIFETIME_SECONDS = 300
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def libtrust_key_id(public_key: Any) -> str:
    """The key id distribution gives a public key: SHA-256 of its DER SubjectPublicKeyInfo, first
    240 bits, base32 without padding, in twelve groups of four joined with ':'."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def parse_scope(scope: str) -> Optional[tuple[str, str, tuple[str, ...]]]:
    """``repository:a/b:pull,push`` -> ("repository", "a/b", ("pull", "push")); None if malformed.

    A resource class (``repository(plugin):...``) is dropped, as distribution ignores it too."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    kind = kind.split("(", 1)[0]
    if not kind or not name or not actions:
        return None
    return kind, name, tuple(dict.fromkeys(a for a in actions.split(",") if a))


@dataclass(frozen=True)
class TokenRequest:
    """One answered request to the token endpoint."""

    at: float
    status: int
    outcome: str  # "issued" | "unauthorized" | "invalid"
    account: Optional[str]  # the user named by Basic credentials (if it is the configured one); None: anonymous
    service: str
    scopes: tuple[str, ...]
    access: tuple[dict, ...] = ()
    user_agent: str = ""
    token: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "outcome": self.outcome, "account": self.account,
                "service": self.service, "scopes": list(self.scopes), "access": list(self.access),
                "user_agent": self.user_agent}


class UpstreamTokenService:
    def __init__(self, *, service: str, issuer: str, private_key_pem: bytes, certificate_pem: bytes,
                 username: str, password: str, public_prefix: str = "public/",
                 lifetime: int = DEFAULT_LIFETIME_SECONDS) -> None:
        if not username or not password:
            raise ValueError("the upstream token service needs a username and a password")
        self.service = service
        self.issuer = issuer
        self.username = username
        self._password = password.encode()
        self.public_prefix = public_prefix
        self.lifetime = lifetime
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            self.algorithm = _EC_ALGORITHMS[self._key.curve.name]
        elif isinstance(self._key, rsa.RSAPrivateKey):
            self.algorithm = "RS256"
        else:
            raise ValueError(f"unsupported signing key type {type(self._key).__name__}")
        if certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != self._key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ValueError("the token signing certificate does not belong to the signing key")
        self.key_id = libtrust_key_id(certificate.public_key())
        self._x5c = [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []

    @classmethod
    def from_config(cls, config: Any) -> Optional["UpstreamTokenService"]:
        """The service an EmulatorConfig describes, or None when it configures no signing key."""
        if not config.upstream_token_key_path:
            return None
        with open(config.upstream_token_key_path, "rb") as fh:
            key_pem = fh.read()
        with open(config.upstream_token_cert_path, "rb") as fh:
            cert_pem = fh.read()
        return cls(service=config.upstream_token_service, issuer=config.upstream_token_issuer,
                   private_key_pem=key_pem, certificate_pem=cert_pem, username=config.upstream_token_username,
                   password=config.upstream_token_password, public_prefix=config.upstream_token_public_prefix,
                   lifetime=int(config.upstream_token_seconds))

    # --- what the endpoint does ------------------------------------------------------------------

    def _authenticate(self, authorization: Optional[str]) -> tuple[bool, Optional[str]]:
        """(acceptable, account): (True, None) anonymous, (True, user) valid Basic, (False, _) otherwise."""
        if not authorization:
            return True, None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, sep, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False, None
        good_user = hmac.compare_digest(user.encode(), self.username.encode())
        good_secret = hmac.compare_digest(secret.encode(), self._password)
        if sep and good_user and good_secret:
            return True, user
        return False, user or None

    def grant(self, account: Optional[str], scopes: list[str]) -> list[dict]:
        """The ``access`` claim for ``scopes`` (each requested resource once, actions merged)."""
        merged: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            if account is not None:
                allowed = [a for a in actions if a in KNOWN_ACTIONS]
            elif kind == "repository" and name.startswith(self.public_prefix):
                allowed = [a for a in actions if a == "pull"]
            else:
                allowed = []
            granted = merged.setdefault((kind, name), [])
            granted.extend(a for a in allowed if a not in granted)
        return [{"type": kind, "name": name, "actions": actions} for (kind, name), actions in merged.items()]

    def issue(self, account: Optional[str], access: list[dict], *, now: Optional[float] = None,
              with_x5c: bool = True, **overrides: Any) -> str:
        """A signed token. ``with_x5c=False`` leaves the registry only the ``kid`` to find the key;
        ``overrides`` replace claims (tests make tokens the registry must refuse this way)."""
        now = int(time.time() if now is None else now)
        claims = {"iss": self.issuer, "sub": account or "", "aud": self.service, "exp": now + self.lifetime,
                  "nbf": now - 1, "iat": now, "jti": uuid.uuid4().hex, "access": access, **overrides}
        headers: dict[str, Any] = {"typ": "JWT", "kid": self.key_id}
        if with_x5c:
            headers["x5c"] = self._x5c
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def answer(self, authorization: Optional[str], service: Optional[str], scopes: list[str],
               user_agent: str = "") -> tuple[int, dict, dict]:
        """(status, JSON body, extra headers) for one token request; records it."""
        ok, account = self._authenticate(authorization)
        if not ok and account != self.username:
            account = None  # a wrongly guessed user name is not echoed into logs
        token = ""
        if service != self.service:
            status, outcome = 400, "invalid"
            body: dict = {"errors": [{"code": "INVALID_REQUEST",
                                      "message": f"unknown service {service!r}; this issuer serves {self.service!r}"}]}
            headers: dict = {}
            access: list[dict] = []
        elif not ok:
            status, outcome, access = 401, "unauthorized", []
            body = {"errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]}
            headers = {"WWW-Authenticate": f'Basic realm="{self.service}"'}
        else:
            status, outcome = 200, "issued"
            access = self.grant(account, scopes)
            token = self.issue(account, access)
            issued_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {"token": token, "access_token": token, "expires_in": self.lifetime, "issued_at": issued_at}
            headers = {"Cache-Control": "no-store"}
        record = TokenRequest(at=time.time(), status=status, outcome=outcome,
                              account=account, service=service or "", scopes=tuple(scopes),
                              access=tuple(access), user_agent=user_agent, token=token)
        with self._lock:
            self._requests.append(record)
        log.info("upstream token %s (%d) for %s: %s", outcome, status, account or "anonymous",
                 " ".join(scopes) or "no scope")
        return status, body, headers

    # --- what tests look at ----------------------------------------------------------------------

    def requests(self, *, since: float = 0.0, scope: Optional[str] = None) -> list[TokenRequest]:
        """Answered requests at or after ``since`` (``time.time()``), optionally naming ``scope``."""
        with self._lock:
            found = [r for r in self._requests if r.at >= since]
        return [r for r in found if scope is None or scope in r.scopes]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


def routes(emu) -> list[Route]:
    """The realm (GET) and its request log (GET to read, DELETE to clear); 404 when not configured."""

    def service_or_404() -> Optional[UpstreamTokenService]:
        return getattr(emu, "upstream_tokens", None)

    async def token(request: Request) -> Response:
        service = service_or_404()
        if service is None:
            return JSONResponse({"errors": [{"code": "NOT_FOUND", "message": "no upstream token service"}]},
                                status_code=404)
        status, body, headers = service.answer(
            request.headers.get("authorization"), request.query_params.get("service"),
            request.query_params.getlist("scope"), request.headers.get("user-agent", ""))
        return JSONResponse(body, status_code=status, headers=headers)

    async def log_of_requests(request: Request) -> Response:
        service = service_or_404()
        if service is None:
            return JSONResponse([], status_code=404)
        if request.method == "DELETE":
            service.clear()
            return Response(status_code=204)
        return JSONResponse([r.to_dict() for r in service.requests()])

    return [
        Route(PATH, token, methods=["GET"]),
        Route(PATH + "/requests", log_of_requests, methods=["GET", "DELETE"]),
    ]
