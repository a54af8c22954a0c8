"""The PNG of a run: load and latency above, replicas per revision below, one time axis.

Above: requests per second (answered in each second) and the p50, p90 and p99 latency of
those answers. Below: for each revision of the target, the replicas the autoscaler wanted
(desired, dashed) and the ones ready (solid), its panic periods shaded, the periods the
activator was in its path as a band along the top, and its cold starts marked. A dotted line
marks the end of the load, so the stable window and the scale-down after it can be read off
the axis.

Drawn with matplotlib's Agg canvas on a Figure of its own (no pyplot, no global state, no
display needed), at a fixed size: :data:`WIDTH_PX` x :data:`HEIGHT_PX`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from knfn.load.series import Row, activator_spans, cold_starts, panic_spans, revision_names

DPI = 100
WIDTH_PX = 1200
HEIGHT_PX = 800
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _ms(values: Sequence[float | None]) -> list[float]:
    return [v * 1000 if v is not None else float("nan") for v in values]


def draw(rows: Sequence[Row], title: str, load_seconds: float, path: Path) -> Path:
    """Write the plot of these rows to path (a PNG) and return path.

    A row's counts and latencies are those of the second before it (drawn over ``[t - 1, t]``,
    latency at its middle); its replicas were sampled during that second and hold until the
    next sample.
    """
    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    fig.suptitle(title)
    ts = [row.t for row in rows]
    _load(top, rows)
    names = revision_names(rows)
    _replicas(bottom, rows, names)
    for ax in (top, bottom):
        ax.axvline(load_seconds, color="black", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    end = max([1, *ts])
    bottom.set_xlim(0, end)
    near_end = load_seconds > 0.85 * end
    bottom.text(
        load_seconds, 0.5, " load ends " if not near_end else "load ends ",
        transform=bottom.get_xaxis_transform(), ha="right" if near_end else "left",
    )  # fmt: skip
    bottom.set_xlabel("seconds since the load started")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _load(ax: Axes, rows: Sequence[Row]) -> None:
    ts = [row.t for row in rows]
    rps = [row.rps for row in rows]
    ax.fill_between(ts, rps, step="pre", alpha=0.25, color="tab:gray")
    ax.step(ts, rps, where="pre", color="tab:gray", label="requests/s")
    ax.set_ylabel("requests/s (answered)")
    ax.set_ylim(bottom=0)
    latency = ax.twinx()
    middles = [t - 0.5 for t in ts]
    for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        values = _ms([getattr(row.second, name) for row in rows])
        latency.plot(middles, values, style, color="tab:purple", label=f"{name} latency")
    latency.set_ylabel("latency (ms)")
    latency.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = latency.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, loc="upper right", fontsize="small")


def _replicas(ax: Axes, rows: Sequence[Row], names: Sequence[str]) -> None:
    highest = 1
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        shown = [(row.t, rev) for row in rows if (rev := row.revision(name)) is not None]
        xs = [t for t, _ in shown]
        ready = [rev.ready for _, rev in shown]
        desired = [rev.desired for _, rev in shown]
        highest = max(highest, *ready, *desired)
        ax.step(xs, ready, where="post", color=color, linewidth=4, alpha=0.5, label=f"{name} ready")
        ax.step(xs, desired, where="post", color=color, linestyle="--", label=f"{name} desired")
        for j, (start, end) in enumerate(panic_spans(rows, name)):
            ax.axvspan(
                start, end, color=color, alpha=0.15, label=f"{name} panic" if j == 0 else None
            )
        for j, (start, end) in enumerate(activator_spans(rows, name)):
            # A band along the top, so it reads apart from the panic shading below it.
            ax.axvspan(
                start, end, ymin=0.95 - 0.05 * i, ymax=1.0 - 0.05 * i, color=color, alpha=0.6,
                hatch="//", label=f"{name} activator in path" if j == 0 else None,
            )  # fmt: skip
        marks = cold_starts(rows, name)
        if marks:
            # On the axis: a cold start is a start from zero ready replicas.
            ax.plot(
                [t for t, _ in marks], [0] * len(marks), "^", color=color, markersize=11,
                markeredgecolor="black", clip_on=False, zorder=5, label=f"{name} cold start",
            )  # fmt: skip
    ax.set_ylabel("replicas")
    ax.set_ylim(0, highest + 1)
    if names:
        ax.legend(loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no replicas shown: /status did not answer", transform=ax.transAxes,
                ha="center")  # fmt: skip
