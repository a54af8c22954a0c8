"""Eventing on one machine: the broker's store, its ingress and its dispatchers, as one unit.

The ingress, flows and PingSources run in knfn's process; the dispatchers in processes of their
own (knfn/eventing/worker.py), which get the manifests from here at start and on every apply.

Stopping is in two calls, so that the caller orders them around the gateway: :meth:`drain`
makes the broker ingress and the flows answer 503 (nothing more is accepted), then
:meth:`stop` ends the dispatchers (attempts in flight may finish within a grace; the rest are
released, never counted as failed), PingSources, and the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from knfn.eventing import broker, channel, history, ping, replay
from knfn.eventing.channel import FlowIngress
from knfn.eventing.config import EventingConfig
from knfn.eventing.sending import Gatewayed
from knfn.eventing.store import EventStore, StoreUnavailable
from knfn.eventing.worker import Dispatchers, DispatchOptions
from knfn.manifests import Manifests
from knfn.responses import Handler, json_error
from knfn.routing import BROKER_INGRESS_TARGET, Target

READ_TIMEOUT = 5.0  # seconds an admin read waits for a pooled connection


class Eventing:
    """Started after Serving (deliveries go through the gateway), stopped before it."""

    def __init__(
        self,
        database_url: str,
        config: EventingConfig,
        manifests: Manifests,
        gateway: str,
        report: Callable[[str], None],
        dispatch: DispatchOptions,
        max_event_bytes: int = broker.DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.config = config
        self._manifests = manifests
        self._url = database_url
        self._gateway = gateway
        self.dispatchers = Dispatchers(database_url, gateway, dispatch, report)
        self._max_event_bytes = max_event_bytes
        self.draining = False
        self._report = report
        self.flows: FlowIngress | None = None
        self.store = EventStore(database_url)
        # The admin API's reads and replays (status, the event list and inspector): a few
        # pooled connections rather than a connect per request (the dashboard polls /status).
        # Waiting past READ_TIMEOUT raises PoolTimeout, an OperationalError: a 503 upstairs.
        self._readers = AsyncConnectionPool(
            database_url, min_size=0, max_size=2, open=False, timeout=READ_TIMEOUT,
            kwargs={"autocommit": True, "connect_timeout": 2},
            check=AsyncConnectionPool.check_connection,
        )  # fmt: skip
        self.ingress = broker.Ingress(self.store, lambda: self.config, max_event_bytes)
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def apply(self, config: EventingConfig, manifests: Manifests) -> None:
        """New brokers and triggers (config, built from manifests) take effect for the next
        accept and attempt."""
        self.config = config
        self.dispatchers.apply(manifests)

    async def start(self) -> None:
        await self.store.open()
        await self._readers.open(wait=False)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )
        send = Gatewayed(self._session, self._gateway)
        self.flows = FlowIngress(
            lambda: self.config.flows,
            self.store.accept,
            report=self._report,
            max_event_bytes=self._max_event_bytes,
        )
        self._tasks.append(
            asyncio.create_task(
                ping.run(lambda: self.config.pings, send, self._stop, report=self._report)
            )
        )
        # After open(): it voids the leases of an earlier run, which the workers' are not.
        self.dispatchers.start(self._manifests)

    def local(self, target: Target) -> Handler | None:
        """The handler for a host served in-process: the broker ingress and the flows (both
        answer 503 once draining)."""
        if target == BROKER_INGRESS_TARGET:
            return _refuse if self.draining else self.ingress.handle
        if self.flows is not None and self.config.flows.find(target.namespace, target.service):
            return _refuse if self.draining else self.flows.handle
        return None

    def drain(self) -> None:
        """Accept nothing more: the broker ingress and the flows answer 503 from now on."""
        self.draining = True

    async def stop(self, grace: float, force: asyncio.Event | None = None) -> int:
        """Stop claiming; let attempts in flight end within grace seconds (or until force), then
        cut the rest short and release them; close the store. Returns how many were released."""
        self.drain()
        self._stop.set()
        try:
            released = await self.dispatchers.stop(grace, force)
        finally:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._readers.close()
            await self.store.close()
            if self._session is not None:
                await self._session.close()
        return released

    def cut(self) -> None:
        """Cut the attempts in flight short now (they are released)."""
        self.dispatchers.cut()

    async def status(self) -> dict[str, Any]:
        try:
            async with self._readers.connection() as conn:
                counts = await history.counts(conn)
        except psycopg.Error:
            counts = {}
        dropped = self.flows.dropped if self.flows is not None else {}
        return {
            **broker.status_of(self.config, counts),
            **channel.status_of(self.config.flows, counts, dropped),
        }

    async def events(self, limit: int) -> list[dict[str, Any]]:
        async with self._readers.connection() as conn:
            return await history.recent(conn, limit)

    async def event(self, number: int) -> dict[str, Any]:
        """One stored event with its deliveries and their attempts (the event inspector)."""
        async with self._readers.connection() as conn:
            return await history.detail(conn, number)

    async def replay(self, number: int, trigger: str | None) -> dict[str, Any]:
        """Deliver a stored event again to its broker's Triggers (knfn/eventing/replay.py)."""
        if self.draining:
            raise StoreUnavailable("knfn is shutting down: nothing is replayed")
        async with self._readers.connection() as conn:
            event = await history.stored(conn, number)
            deliveries = replay.targets(self.config, event, trigger)
            replay_number = await history.replay(conn, number, deliveries)
        return replay.summary(number, replay_number, deliveries)


async def _refuse(request: web.Request) -> web.Response:
    """While knfn stops: nothing is accepted that could not be stored and delivered."""
    return json_error(
        503,
        "knfn is shutting down: the broker accepts no more events",
        headers={"Retry-After": "1"},
    )
