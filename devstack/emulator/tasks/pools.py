"""Agent pools: create, scale and delete as long-running operations; their JSON."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from .common import ArmError, POOL_TIERS, _bad, _field, _iso, _not_found, _now, _obj

if TYPE_CHECKING:
    from .state import TasksState

logger = logging.getLogger(__name__)


@dataclass
class Pool:
    name: str
    count: int
    tier: str = "S1"
    os: str = "Linux"
    location: str = "westus"
    tags: dict = field(default_factory=dict)
    active: int = 0  # agents online (count takes effect when a scale operation completes)
    provisioning_state: str = "Succeeded"
    subnet: Optional[str] = None
    deleting: Optional["Operation"] = None  # the delete operation under way


@dataclass
class Operation:
    op_id: str
    pool: str
    status: str = "InProgress"
    start: dt.datetime = field(default_factory=_now)
    end: Optional[dt.datetime] = None


class PoolStore:
    """The agent pool methods of ``TasksState`` (its lock, pools, operations and runs)."""

    def pool_list(self) -> list[dict]:
        with self._lock:
            return [pool_json(self, p) for p in self.pools.values()]

    # -- agent pools

    def get_pool(self, name: str) -> Pool:
        pool = self.pools.get(name.lower())
        if pool is None:
            raise _not_found("agentPools", name)
        return pool

    def put_pool(self, name: str, body: dict) -> tuple[Pool, Optional[Operation], bool]:
        """Create or replace a pool. Returns (pool, operation or None, created)."""
        props, location, tags = _parse_pool_body(body)
        with self._lock:
            pool = self.pools.get(name.lower())
            created = pool is None
            if pool is not None and pool.deleting is not None:
                raise ArmError(409, "AgentPoolDeleting", f"The agent pool '{pool.name}' is being deleted.")
            if created:
                pool = Pool(name=name, count=0, active=0, provisioning_state="Creating")
                self.pools[name.lower()] = pool
            pool.location, pool.tags = location, tags
            pool.tier = props.get("tier", pool.tier)
            pool.os = props.get("os", pool.os)
            pool.subnet = props.get("virtualNetworkSubnetResourceId", pool.subnet)
            count = props.get("count", 1 if created else pool.count)
            op = self._scale(pool, count) if created or count != pool.active else None
        return pool, op, created

    def patch_pool(self, name: str, body: dict) -> tuple[Pool, Optional[Operation]]:
        count, tags = _parse_pool_patch(body)
        with self._lock:
            pool = self.get_pool(name)
            if pool.deleting is not None:
                raise ArmError(409, "AgentPoolDeleting", f"The agent pool '{pool.name}' is being deleted.")
            if tags is not None:
                pool.tags = tags
            if count is None or (count == pool.active and pool.provisioning_state == "Succeeded"):
                return pool, None
            return pool, self._scale(pool, count)

    def delete_pool(self, name: str) -> Optional[Operation]:
        """Start deleting a pool: its operation (the same one while a delete is under way), or None
        when there is no such pool."""
        with self._lock:
            pool = self.pools.get(name.lower())
            if pool is None:
                return None
            if pool.deleting is not None:
                return pool.deleting
            if self.active_runs_on(pool.name):
                raise ArmError(409, "AgentPoolInUse",
                               f"The agent pool '{pool.name}' has queued or running runs.")
            op = Operation(op_id=str(uuid.uuid4()), pool=pool.name)
            self.operations[op.op_id] = op
            pool.deleting, pool.provisioning_state = op, "Deleting"
        threading.Thread(target=self._complete_delete, args=(pool, op), name=f"acr-pool-{pool.name}-delete",
                         daemon=True).start()
        logger.info("agent pool %s: deleting", pool.name)
        return op

    def _operation_seconds(self, name: str) -> float:
        value = getattr(self.config, name, None)
        return self.step_seconds() if value is None else max(0.0, float(value))

    def _wait_operation(self, name: str) -> None:
        """Sleep for the operation time (re-read while waiting, so a settings change applies)."""
        began = time.monotonic()
        while not self._closed.is_set() and time.monotonic() < began + self._operation_seconds(name):
            self._closed.wait(0.05)

    def _complete_delete(self, pool: Pool, op: Operation) -> None:
        self._wait_operation("pool_delete_seconds")
        with self._cond:
            op.status, op.end = "Succeeded", _now()
            if self.pools.get(pool.name.lower()) is pool:
                del self.pools[pool.name.lower()]
            self._cond.notify_all()
        logger.info("agent pool %s: deleted", pool.name)

    def _scale(self, pool: Pool, count: int) -> Operation:
        op = Operation(op_id=str(uuid.uuid4()), pool=pool.name)
        self.operations[op.op_id] = op
        pool.count = count
        if pool.provisioning_state != "Creating":
            pool.provisioning_state = "Updating"
        threading.Thread(target=self._complete_scale, args=(pool, op, count),
                         name=f"acr-pool-{pool.name}", daemon=True).start()
        logger.info("agent pool %s: scaling to %d", pool.name, count)
        return op

    def _complete_scale(self, pool: Pool, op: Operation, count: int) -> None:
        self._wait_operation("pool_scale_seconds")
        with self._cond:
            op.status, op.end = "Succeeded", _now()
            if self.pools.get(pool.name.lower()) is not pool or pool.count != count or pool.deleting:
                return  # deleted, or a later scale operation owns the pool now
            pool.active, pool.provisioning_state = count, "Succeeded"
            waiting = [r for r in self.runs.values() if r.status == "Queued" and r.pool == pool.name]
            self._cond.notify_all()
        logger.info("agent pool %s: %d agent(s) online", pool.name, count)
        for run in waiting:
            self.log(run, f"Agent pool '{pool.name}' scaled to {count} agent(s)")

    def get_operation(self, pool_name: str, op_id: str) -> Operation:
        op = self.operations.get(op_id)
        if op is None or op.pool.lower() != pool_name.lower():
            raise _not_found(f"agentPools/{pool_name}/operationStatuses", op_id)
        return op


# --- pool bodies ---------------------------------------------------------------------

def _parse_pool_body(body: Any) -> tuple[dict, str, dict]:
    if not isinstance(body, dict):
        raise _bad("The request content must be a JSON object.", "InvalidRequestContent")
    location = _field(body, "location", str, "")
    if not location:
        raise _bad("The property 'location' is required.", "LocationRequired")
    tags = _field(body, "tags", dict, "") or {}
    props = _obj(body, "properties", "") or {}
    out: dict = {}
    count = _field(props, "count", int, "properties.")
    if count is not None:
        out["count"] = _check_count(count)
    tier = _field(props, "tier", str, "properties.")
    if tier is not None:
        if tier.lower() not in POOL_TIERS:
            raise _bad(f"The tier '{tier}' is not valid; allowed: {', '.join(POOL_TIERS.values())}.")
        out["tier"] = POOL_TIERS[tier.lower()]
    os_name = _field(props, "os", str, "properties.")
    if os_name is not None:
        if os_name.lower() != "linux":
            raise _bad("Agent pools support only os 'Linux'.")
        out["os"] = "Linux"
    subnet = _field(props, "virtualNetworkSubnetResourceId", str, "properties.")
    if subnet is not None:
        out["virtualNetworkSubnetResourceId"] = subnet
    return out, location, tags


def _check_count(count: int) -> int:
    if count < 0 or count > 100:
        raise _bad("The property 'properties.count' must be between 0 and 100.")
    return count


def _parse_pool_patch(body: Any) -> tuple[Optional[int], Optional[dict]]:
    if not isinstance(body, dict):
        raise _bad("The request content must be a JSON object.", "InvalidRequestContent")
    props = _obj(body, "properties", "") or {}
    count = _field(props, "count", int, "properties.")
    return (None if count is None else _check_count(count)), _field(body, "tags", dict, "")


def pool_json(state: TasksState, pool: Pool) -> dict:
    props = {"count": pool.count, "tier": pool.tier, "os": pool.os, "provisioningState": pool.provisioning_state}
    if pool.subnet:
        props["virtualNetworkSubnetResourceId"] = pool.subnet
    return {"id": f"{state.registry_id}/agentPools/{pool.name}", "name": pool.name,
            "type": "Microsoft.ContainerRegistry/registries/agentPools", "location": pool.location,
            "tags": pool.tags, "properties": props}


def operation_json(state: TasksState, op: Operation) -> dict:
    return {"id": f"{state.registry_id}/agentPools/{op.pool}/operationStatuses/{op.op_id}", "name": op.op_id,
            "status": op.status, "startTime": _iso(op.start), "endTime": _iso(op.end)}
