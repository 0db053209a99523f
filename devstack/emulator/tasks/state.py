"""The state of one emulated registry's ACR Tasks: runs, agent pools, tasks and pool operations."""
from __future__ import annotations

import threading
from typing import Any

from .common import REGISTRY_PATH
from .definitions import TaskDefinitions
from .logs import BlobArea
from .pools import Operation, Pool, PoolStore
from .runs import Run, RunClock


class TasksState(RunClock, PoolStore, TaskDefinitions):
    """Runs, agent pools, tasks and pool operations of one emulated registry (``emu.tasks``)."""

    def __init__(self, emu: Any):
        self.emu = emu
        self.config = emu.config
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._last_seq = 0
        self.runs: dict[str, Run] = {}
        self.pools: dict[str, Pool] = {}
        self.tasks: dict[str, dict] = {}
        self.operations: dict[str, Operation] = {}
        self.blobs = BlobArea(getattr(self.config, "storage_connection_string", None))
        for name, conf in (getattr(self.config, "agent_pools", None) or {}).items():
            self._add_config_pool(name, conf or {})

    def _add_config_pool(self, name: str, conf: dict) -> None:
        count = int(conf.get("count", 1))
        self.pools[name.lower()] = Pool(name=name, count=count, active=count, tier=conf.get("tier", "S1"),
                                        os=conf.get("os", "Linux"), location=self.location)

    # -- identity of the registry

    @property
    def location(self) -> str:
        return getattr(self.config, "location", None) or "westus"

    @property
    def login_server(self) -> str:
        server = getattr(self.emu, "login_server", None)
        if server:
            return server
        return f"{self.config.host}:{self.config.port}"

    @property
    def registry_id(self) -> str:
        c = self.config
        return REGISTRY_PATH.format(subscription=c.subscription_id, group=c.resource_group, registry=c.registry_name)

    def step_seconds(self) -> float:
        try:
            return max(0.0, float(getattr(self.config, "run_step_seconds", 1.0)))
        except (TypeError, ValueError):
            return 1.0

    def close(self) -> None:
        """Stop every run thread (they are daemons; this makes them exit promptly)."""
        self._closed.set()
        with self._cond:
            for run in self.runs.values():
                run.wake.set()
            self._cond.notify_all()
