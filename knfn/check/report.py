"""How `knfn check` shows its verdicts: a rich table for people, a JSON list for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knfn.check.model import Verdict

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def as_json(verdicts: Sequence[Verdict]) -> str:
    return json.dumps([v.as_json() for v in verdicts], indent=2)


def table(verdicts: Sequence[Verdict], console: Console) -> None:
    """One table per function: factor, verdict, evidence and (for warn/fail) the fix."""
    for service in dict.fromkeys(v.service for v in verdicts):
        rows = [v for v in verdicts if v.service == service]
        t = Table(title=f"{service}: the twelve factors", title_justify="left", expand=True)
        t.add_column("#", justify="right", no_wrap=True)
        t.add_column("factor", no_wrap=True)
        t.add_column("verdict", no_wrap=True)
        t.add_column("evidence / fix", ratio=1)
        for v in rows:
            said = escape(v.evidence)
            if v.status != "pass":
                said += f"\n[dim]fix:[/] {escape(v.fix)}"
            t.add_row(str(v.factor), v.name, f"[{STYLE[v.status]}]{v.status}[/]", said)
        console.print(t)
    counts = {s: sum(v.status == s for v in verdicts) for s in STYLE}
    functions = len({v.service for v in verdicts})
    console.print(f"{functions} function(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
