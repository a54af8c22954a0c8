"""The twelve verdicts of one function: static findings and measured ones, per factor.

Pure: a Subject (what the files say) and a Measurement (what running it showed, or None when
it was not run) in, twelve Verdicts out. A measured factor that could not be measured is a
warn with the reason, never a pass on the static half alone.
"""

from __future__ import annotations

from collections.abc import Callable

from knfn.check import codebase, config, dependencies, parity, processes, runtime
from knfn.check.measure import Measurement
from knfn.check.model import Finding, Verdict, verdict
from knfn.check.source import Subject

LOG_SUFFIXES = (".log", ".log.1", ".out")


def _is_log(path: str) -> bool:
    return path.endswith(LOG_SUFFIXES) or "/logs/" in f"/{path}"


def _unmeasured(m: Measurement | None, what: str) -> list[Finding]:
    if m is None:
        return [
            Finding(
                "warn",
                f"not measured: {what} shows only when it runs",
                "run the check where the function can start",
            )
        ]
    if m.ready_seconds is None:
        return [
            Finding(
                "warn",
                f"not measured: it never became ready ({m.start_problem})",
                "make it start (factor 7), then check again",
            )
        ]
    return []


def measured_processes(m: Measurement | None) -> tuple[list[Finding], str]:
    found = _unmeasured(m, "state kept between requests")
    if found or m is None:
        return found, ""
    for path in m.written:
        if not _is_log(path):
            found.append(
                Finding(
                    "fail",
                    f"wrote {path} while serving (outside /tmp)",
                    "write scratch files under /tmp; keep data in S3 or Postgres",
                )
            )
    first, last = m.answers[0], m.answers[-1]
    if first != last:
        if m.fresh == first:
            found.append(
                Finding(
                    "fail",
                    f"answer {len(m.answers)} to the same request was "
                    f"{last.summary()}, the 1st {first.summary()}, and a new "
                    "replica answers as the 1st did: answers depend on earlier "
                    "requests",
                    processes.FIX_STATE,
                )
            )
        else:
            found.append(
                Finding(
                    "warn",
                    f"the same request answered {first.summary()}, then "
                    f"{last.summary()}, and a new replica otherwise: time or "
                    "randomness? cannot tell state from noise",
                    "make answers depend on the request and the backing services only",
                )
            )
    said = first.summary()
    return found, f"{len(m.answers)} identical requests answered alike ({said}); no file written"


def measured_port(m: Measurement | None) -> tuple[list[Finding], str]:
    if m is None:
        return _unmeasured(m, "binding $PORT"), ""
    if m.ready_seconds is None:
        return [
            Finding(
                "fail",
                f"did not listen on $PORT={m.port}: {m.start_problem}",
                "serve with functions-framework, which binds $PORT",
            )
        ], ""
    return [], f"listens on $PORT={m.port} (HOST 127.0.0.1) and answers there"


def measured_disposability(m: Measurement | None, limit: float) -> tuple[list[Finding], str]:
    found = _unmeasured(m, "start and stop times")
    if found or m is None or m.ready_seconds is None:
        return found, ""
    own = m.ready_seconds - m.queued_seconds  # what an idle machine would have taken
    if own > limit:
        found.append(
            Finding(
                "fail",
                f"took {own:.1f} s from start to ready{_busy(m)} "
                f"(over {limit:.0f} s): every cold start waits that long",
                "import less at start; open connections lazily",
            )
        )
    if m.in_flight is None or m.in_flight.status is None:
        why = m.in_flight.error if m.in_flight else "not sent"
        found.append(
            Finding(
                "fail",
                f"the request in flight at SIGTERM got no answer ({why})",
                "let the server drain on SIGTERM before exiting",
            )
        )
    if m.exit_seconds is None:
        found.append(
            Finding(
                "fail",
                f"still running {m.grace:.0f} s after SIGTERM: killed",
                "let SIGTERM reach the server: it drains, then exits",
            )
        )
    done = f"exited {m.exit_seconds:.1f} s after SIGTERM" if m.exit_seconds is not None else ""
    return found, (
        f"ready in {own:.1f} s{_busy(m)}; on SIGTERM it answered the request in "
        f"flight and {done} (grace {m.grace:.0f} s)"
    )


def _busy(m: Measurement) -> str:
    if m.queued_seconds < 0.05 or m.ready_seconds is None:
        return ""
    return f" (plus {m.queued_seconds:.1f} s waiting for a CPU)"


def measured_logs(m: Measurement | None) -> tuple[list[Finding], str]:
    found = _unmeasured(m, "where logs go")
    if found or m is None:
        return found, ""
    for path in m.written:
        if _is_log(path):
            found.append(
                Finding("fail", f"wrote the log file {path} while serving", parity._FIX_LOGS)
            )
    return found, f"{len(m.output)} lines on stdout while serving"


Static = Callable[[Subject], list[Finding]]


def judge(subject: Subject, m: Measurement | None, ready_limit: float) -> list[Verdict]:
    """The twelve verdicts, factor by factor."""
    name = subject.name

    def both(
        factor: int, static: Static, measured: tuple[list[Finding], str], passed: str
    ) -> Verdict:
        findings, said = measured
        return verdict(
            name, factor, [*static(subject), *findings], "; ".join(p for p in (passed, said) if p)
        )

    return [
        verdict(name, 1, codebase.codebase(subject), codebase.codebase_passed(subject)),
        verdict(
            name, 2, dependencies.dependencies(subject), dependencies.dependencies_passed(subject)
        ),
        verdict(name, 3, config.config(subject), config.config_passed(subject)),
        verdict(name, 4, config.backing_services(subject), config.backing_services_passed(subject)),
        verdict(
            name, 5, codebase.build_release_run(subject), codebase.build_release_run_passed(subject)
        ),
        both(
            6,
            processes.processes,
            measured_processes(m),
            "no handler changes module-level state; no file written outside /tmp",
        ),
        both(7, runtime.port_binding, measured_port(m), ""),
        verdict(name, 8, runtime.concurrency(subject), runtime.concurrency_passed(subject)),
        both(9, runtime.disposability, measured_disposability(m, ready_limit), ""),
        verdict(name, 10, parity.parity(subject), parity.parity_passed(subject)),
        both(11, parity.logs, measured_logs(m), parity.logs_passed(subject)),
        verdict(name, 12, parity.admin(subject), parity.admin_passed(subject)),
    ]
