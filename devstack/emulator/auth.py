"""Tokens of the stand-in: managed-identity (AAD-like) tokens, the ARM bearer check, ACR tokens.

Every token is a JWT signed (HS256) with a secret that lives only in this process, so tokens from
one emulator run are worthless to the next. Token values are never logged.

Data-plane roles (ACR's built-in roles, "Azure Container Registry roles and permissions": Owner and
Contributor push, pull and delete; Reader and AcrPull pull; AcrPush pushes and pulls; AcrDelete
deletes; "Container Registry Data Importer and Data Reader" imports and pulls): an access token
grants, of the actions a client asks for, those the identity's roles allow (the Docker token
spec's intersection), so a pull-only identity that asks for ``pull,push`` gets ``pull`` and its
push is then refused with a 401 challenge. Roles are assigned per managed identity client id
(``EmulatorConfig.identity_roles``, ``/_devstack/roles``); an identity without an assignment may do
everything, which is what the emulator did before it modelled roles.
"""
from __future__ import annotations

import secrets
import time
import uuid
from typing import Any, Iterable

import jwt

ALGORITHM = "HS256"
ACR_ISSUER = "Azure Container Registry"
ACR_AUDIENCE = "https://containerregistry.azure.net"
IDENTITY_TOKEN_SECONDS = 24 * 3600
REFRESH_TOKEN_SECONDS = 3 * 3600
ACCESS_TOKEN_SECONDS = 75 * 60
VERIFIED_TOKENS_KEPT = 4096
READ_ACTIONS = frozenset({"pull", "metadata_read"})
WRITE_ACTIONS = frozenset({"push", "metadata_write"})
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "Owner": READ_ACTIONS | WRITE_ACTIONS | {"delete"},
    "Contributor": READ_ACTIONS | WRITE_ACTIONS | {"delete"},
    "Reader": READ_ACTIONS,
    "AcrPush": READ_ACTIONS | WRITE_ACTIONS,
    "AcrPull": READ_ACTIONS,
    "AcrDelete": frozenset({"delete"}),
    "Container Registry Data Importer and Data Reader": READ_ACTIONS,
}
EVERYTHING = frozenset().union(*ROLE_ACTIONS.values())


def check_roles(roles) -> list[str]:
    """A list of known role names (ValueError names the unknown one)."""
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise ValueError("roles must be a list of role names")
    for role in roles:
        if role not in ROLE_ACTIONS:
            raise ValueError(f"unknown role {role!r}; known: {', '.join(sorted(ROLE_ACTIONS))}")
    return list(roles)


class AuthError(Exception):
    """A token was missing or not acceptable; ``code`` is the ARM error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "AuthenticationFailed", "Authentication failed. The 'Authorization' header is not a Bearer token."
        )
    return token.strip()


def parse_scopes(scope: str) -> list[dict[str, Any]]:
    """'repository:a/b:pull,push registry:catalog:*' -> Docker token 'access' entries."""
    access = []
    for item in scope.split():
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind and name and actions:
            access.append({"type": kind, "name": name, "actions": sorted(set(actions.split(",")))})
    return access


def _same_audience(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


class TokenAuthority:
    def __init__(self, config: Any) -> None:
        self._config = config
        self._secret = secrets.token_bytes(32)
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.object_id = str(uuid.uuid4())
        self._verified: dict[str, dict[str, Any]] = {}  # token -> its claims (never mutated)
        assigned = getattr(config, "identity_roles", None) or {}
        self.identity_roles: dict[str, list[str]] = {client: check_roles(roles) for client, roles in assigned.items()}

    def trust_identities_of(self, other: "TokenAuthority") -> None:
        """Accept the managed-identity tokens ``other`` issues: one tenant, two registries (a second
        emulated ACR beside the first). ACR tokens stay per registry: they name their service."""
        self._secret = other._secret
        self.tenant_id, self.client_id, self.object_id = other.tenant_id, other.client_id, other.object_id

    def allowed_actions(self, client_id: str | None) -> frozenset[str]:
        """The data-plane actions an identity's roles allow (everything without an assignment)."""
        roles = self.identity_roles.get(client_id or "")
        if roles is None:
            return EVERYTHING
        return frozenset().union(*(ROLE_ACTIONS[role] for role in roles))

    def grant(self, requested: list[dict[str, Any]], client_id: str | None) -> list[dict[str, Any]]:
        """The access entries of a token: each requested entry with only the actions allowed.
        ``registry:catalog:*`` is granted to an identity that may pull."""
        if (client_id or "") not in self.identity_roles:
            return requested
        allowed = self.allowed_actions(client_id)
        granted = []
        for entry in requested:
            if entry["type"] == "registry":
                actions = entry["actions"] if "pull" in allowed else []
            elif "*" in entry["actions"]:
                actions = sorted(allowed)
            else:
                actions = [action for action in entry["actions"] if action in allowed]
            granted.append({**entry, "actions": actions})
        return granted

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    @property
    def _service(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    def _encode(self, claims: dict[str, Any], lifetime: int) -> tuple[str, int]:
        now = int(time.time())
        expires = now + lifetime
        token = jwt.encode({**claims, "iat": now, "nbf": now, "exp": expires}, self._secret, algorithm=ALGORITHM)
        return token, expires

    def _decode(self, token: str) -> dict[str, Any]:
        """The claims of a token this authority signed. A verified token's claims are kept by its
        string (a data-plane token is sent with every request; verifying a 50-scope token each time
        was a large share of the stand-in's cost per request); only its expiry is checked again."""
        claims = self._verified.get(token)
        if claims is None:
            try:
                claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"verify_aud": False})
            except jwt.ExpiredSignatureError as exc:
                raise AuthError("ExpiredAuthenticationToken",
                                "The access token expiry UTC time is in the past.") from exc
            except jwt.InvalidTokenError as exc:
                raise AuthError("InvalidAuthenticationToken", "The access token is invalid.") from exc
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[token] = claims
        elif claims["exp"] <= time.time():  # as PyJWT decides it, without leeway
            raise AuthError("ExpiredAuthenticationToken", "The access token expiry UTC time is in the past.")
        return claims

    # --- managed identity (the App Service token endpoint) -------------------------------------

    def issue_identity_token(self, resource: str, client_id: str | None = None) -> dict[str, str]:
        token, expires = self._encode(
            {
                "aud": resource,
                "iss": self.issuer,
                "tid": self.tenant_id,
                "oid": self.object_id,
                "sub": self.object_id,
                "appid": client_id or self.client_id,
                "idtyp": "app",
            },
            IDENTITY_TOKEN_SECONDS,
        )
        return {
            "access_token": token,
            "expires_on": str(expires),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id or self.client_id,
        }

    def check_identity_token(self, token: str, audiences: Iterable[str]) -> dict[str, Any]:
        claims = self._decode(token)
        if claims.get("iss") != self.issuer:
            raise AuthError("InvalidAuthenticationToken", "The access token is invalid.")
        audience = str(claims.get("aud", ""))
        if not any(_same_audience(audience, allowed) for allowed in audiences):
            raise AuthError(
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource '{audience}'.",
            )
        return claims

    def check_arm_authorization(self, authorization: str | None) -> dict[str, Any]:
        return self.check_identity_token(bearer_token(authorization), [self._config.arm_audience])

    # --- ACR data plane: AAD token -> refresh token -> access token ------------------------------

    def _check_service(self, service: str) -> None:
        if service.lower() != self._service.lower():
            raise AuthError("InvalidService", f"service '{service}' does not match the registry '{self._service}'.")

    def issue_refresh_token(self, aad_token: str, service: str) -> str:
        self._check_service(service)
        claims = self.check_identity_token(aad_token, [self._config.arm_audience, ACR_AUDIENCE])
        token, _ = self._encode(
            {"iss": ACR_ISSUER, "aud": service, "sub": claims["oid"], "tenant": claims["tid"], "use": "refresh",
             "appid": claims.get("appid")},
            REFRESH_TOKEN_SECONDS,
        )
        return token

    def _check_acr_token(self, token: str, service: str, use: str) -> dict[str, Any]:
        claims = self._decode(token)
        if claims.get("iss") != ACR_ISSUER or claims.get("use") != use or claims.get("aud") != service:
            raise AuthError("InvalidAuthenticationToken", f"The {use} token is invalid.")
        return claims

    def issue_access_token(self, refresh_token: str, service: str, scope: str) -> str:
        self._check_service(service)
        claims = self._check_acr_token(refresh_token, service, "refresh")
        access = self.grant(parse_scopes(scope), claims.get("appid"))
        token, _ = self._encode(
            {"iss": ACR_ISSUER, "aud": service, "sub": claims["sub"], "use": "access", "access": access},
            ACCESS_TOKEN_SECONDS,
        )
        return token

    def allows(self, authorization: str | None, kind: str | None, name: str | None, action: str | None) -> bool:
        """Whether a data-plane request carries an access token for this registry granting the action.

        ``kind`` None means any valid access token will do (``GET /v2/``).
        """
        try:
            claims = self._check_acr_token(bearer_token(authorization), self._service, "access")
        except AuthError:
            return False
        if kind is None:
            return True
        return any(
            entry.get("type") == kind and entry.get("name") == name and {action, "*"} & set(entry.get("actions", []))
            for entry in claims.get("access", [])
        )
