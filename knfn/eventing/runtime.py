"""Eventing on one machine: the broker's store, its ingress and its dispatchers, as one unit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import psycopg

from knfn.eventing import broker, ping
from knfn.eventing.config import EventingConfig
from knfn.eventing.flows import FlowIngress
from knfn.eventing.sending import Gatewayed
from knfn.eventing.store import EventStore
from knfn.gateway import Handler
from knfn.routing import BROKER_INGRESS_TARGET, Target


class Eventing:
    """Started after Serving (deliveries go through the gateway), stopped before it."""

    def __init__(
        self,
        database_url: str,
        config: EventingConfig,
        gateway: str,
        report: Callable[[str], None],
        dispatchers: int = 1,
        max_event_bytes: int = broker.DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.config = config
        self._url = database_url
        self._gateway = gateway
        self._dispatchers = dispatchers
        self._report = report
        self.flows: FlowIngress | None = None
        self.store = EventStore(database_url)
        self.ingress = broker.Ingress(self.store, lambda: self.config, max_event_bytes)
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def apply(self, config: EventingConfig) -> None:
        """New brokers and triggers take effect for the next accept and attempt."""
        self.config = config

    async def start(self) -> None:
        await self.store.open()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )
        send = Gatewayed(self._session, self._gateway)
        self.flows = FlowIngress(lambda: self.config.flows, send, report=self._report)
        self._tasks.append(
            asyncio.create_task(
                ping.run(lambda: self.config.pings, send, self._stop, report=self._report)
            )
        )
        for _ in range(self._dispatchers):
            dispatcher = broker.Dispatcher(self._url, self.store, lambda: self.config, send)
            self._tasks.append(asyncio.create_task(dispatcher.run(self._stop)))

    def local(self, target: Target) -> Handler | None:
        """The handler for a host served in-process: the broker ingress and the flows."""
        if target == BROKER_INGRESS_TARGET:
            return self.ingress.handle
        if self.flows is not None and self.config.flows.find(target.namespace, target.service):
            return self.flows.handle
        return None

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()
        if self._session is not None:
            await self._session.close()

    async def status(self) -> dict[str, Any]:
        try:
            async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                counts = await self.store.counts(conn)
        except psycopg.Error:
            counts = {}
        return broker.status_of(self.config, counts)

    async def events(self, limit: int) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            return await self.store.recent(conn, limit)
