"""``knfn dev --watch``: a change to a function's code or to the manifests is applied live.

The tree is polled (five times a second: a stat of each source file, no extra dependency).
A change reloads the manifests; Serving then makes a new revision where the code or template
changed (with its own template process, knfn/serving/template.py), moves traffic to it once its
first replica is ready, and drains the old one. A manifest that does not load is reported and not
applied. The replica budget never holds a new revision back (knfn/serving/budget.py: activation).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from knfn import manifests
from knfn.errors import KnfnError
from knfn.eventing import config as eventing_config
from knfn.eventing.runtime import Eventing
from knfn.logs import Printer
from knfn.serving.revision import source_files
from knfn.serving.runtime import Serving
from knfn.settings import Settings

INTERVAL = 0.2

Fingerprint = frozenset[tuple[str, int, int]]


def fingerprint(folders: list[Path]) -> Fingerprint:
    """Path, mtime and size of every file that could make a new revision."""
    seen: set[tuple[str, int, int]] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in source_files(folder):
            with contextlib.suppress(OSError):
                st = path.stat()
                seen.add((str(path), st.st_mtime_ns, st.st_size))
    return frozenset(seen)


def watched(settings: Settings) -> list[Path]:
    functions = sorted(p for p in settings.functions_dir.iterdir() if p.is_dir())
    return [settings.knative_dir, *functions]


async def run(
    settings: Settings, serving: Serving, eventing: Eventing, say: Printer, stop: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    last = await loop.run_in_executor(None, fingerprint, watched(settings))
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), INTERVAL)
        current = await loop.run_in_executor(None, fingerprint, watched(settings))
        if current == last:
            continue
        last = current
        try:
            m = await loop.run_in_executor(
                None, manifests.load, settings.knative_dir, settings.functions_dir
            )
            brokers = eventing_config.load(m, eventing.config.allow_not_ready)
            for warning in m.warnings:
                say.line("knfn", f"warning: {warning}")
            await serving.apply(m)
            eventing.apply(brokers, m)
        except KnfnError as exc:
            say.line("knfn", f"change not applied: {exc}")
            continue
        latest = ", ".join(s.latest.name for s in serving.services.values())
        say.line("knfn", f"change applied; latest revisions: {latest}")
