"""GET /api/health: configuration problems and reachability of storage, ARM and the registry."""
from __future__ import annotations

import time

from ..core.outcome import redact
from ..errors import ConfigError


def _probe(name: str, fn, secrets) -> dict:
    started = time.monotonic()
    try:
        detail = fn()
        return {"name": name, "ok": True, "detail": detail, "ms": round((time.monotonic() - started) * 1000)}
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        message = getattr(exc, "message", None) or f"{type(exc).__name__}"
        return {"name": name, "ok": False, "detail": redact(str(message)[:300], secrets),
                "ms": round((time.monotonic() - started) * 1000)}


def check(services_factory) -> dict:
    try:
        services = services_factory()
    except ConfigError as exc:
        return {"status": "unhealthy", "configuration": [exc.message], "checks": []}
    s = services.settings
    secrets = s.secrets()

    def storage():
        services.clients.blob_service.get_container_client(s.outcomes_container).exists()
        return "blob service reachable"

    def arm():
        registry = services.clients.registry_mgmt.registries.get(s.resource_group, s.registry_name)
        return f"registry {registry.name} ({registry.properties.login_server})"

    def registry():
        response = services.http.get(f"https://{services.clients.login_server}/v2/")
        if response.status_code not in (200, 401):
            raise RuntimeError(f"/v2/ answered {response.status_code}")
        return f"data plane answered {response.status_code}"

    checks = [_probe("storage", storage, secrets), _probe("arm", arm, secrets), _probe("registry", registry, secrets)]
    return {"status": "healthy" if all(c["ok"] for c in checks) else "unhealthy", "configuration": [],
            "checks": checks}
