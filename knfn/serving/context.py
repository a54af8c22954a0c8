"""What Serving needs from the outside, built once by knfn/dev.py and injected.

The replica starter, the revision store, the clock and the sleep come in here, so that Serving
runs in a unit test with fake replicas and a scripted clock (tests/unit/fakes.py), as honcho's
manager is tested with injected process constructors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from knfn import manifests as mf
from knfn.logs import Printer
from knfn.ports import free_port
from knfn.serving import budget
from knfn.serving.budget import Caps
from knfn.serving.kpa import Autoscaler
from knfn.serving.replica import ReplicaSpec
from knfn.serving.replica_env import SecretValues
from knfn.serving.replica_records import ReplicaRecords
from knfn.serving.revision import Revision
from knfn.serving.template_root import TemplateRoot


class ReplicaHandle(Protocol):
    """What serving uses of a replica: knfn.serving.replica.Replica, or a fake in unit tests."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def exited(self) -> bool: ...
    async def start(self) -> None: ...
    async def wait_ready(self, timeout: float) -> float:
        """Until ready; raises ReplicaError when it exits first or is not ready in time."""
        ...

    async def wait_gone(self) -> str:
        """Until it exits or cannot be read any more; which, in words."""
        ...

    async def stop(self, grace: float) -> None: ...


class Revisions(Protocol):
    """Where revisions are recorded: knfn.serving.revision.RevisionStore (Postgres)."""

    def ensure(
        self, namespace: str, service: str, source: Path, template: Mapping[str, Any]
    ) -> Revision: ...
    def get(self, namespace: str, name: str) -> Revision | None: ...


@dataclass(frozen=True)
class Context:
    """What every revision runtime needs from the outside, built once by dev."""

    printer: Printer
    store: Revisions
    values: SecretValues
    proxy_url: str
    host_env: Mapping[str, str]
    argv: tuple[str, ...]
    new_decider: Callable[[mf.Service], Autoscaler]
    caps: Caps
    functions_dir: Path
    new_replica: Callable[[ReplicaSpec], ReplicaHandle]  # replica.Replica, as new_decider
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time  # only to show the clock's moments as dates
    # Injected with the clock so that serving is tested without processes, sockets or waiting
    # (tests/unit/fakes.py).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    pick_port: Callable[[], int] = free_port
    templates: bool = False  # fork replicas from a template per revision (template.py)
    template_root: TemplateRoot | None = None  # forks those templates (template_root.py)
    records: ReplicaRecords | None = None  # where templates record their spares (as replicas)
    # MemAvailable and the reserve kept from it (budget.py); None: no memory bound.
    memory: Callable[[budget.Reserve], budget.Memory | None] = budget.available_memory
    # Where blocking reads (a /proc walk per replica) run: a worker thread, or inline in tests.
    offload: Callable[[Callable[[], None]], Awaitable[None]] = field(
        default=lambda fn: asyncio.get_running_loop().run_in_executor(None, fn)
    )
