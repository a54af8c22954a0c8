"""`knfn check`'s verdicts: static and measured findings combined, factor by factor."""

from __future__ import annotations

from knfn.check.measure import Answer, Measurement, changed
from knfn.check.model import Finding, verdict
from knfn.check.verdicts import judge
from tests.unit.test_check_static import subject

CLEAN = "import os\nimport flask\ndef handle(r):\n    return os.environ['GREETING']\n"
OK = Answer(200, b"hello")


def measured(**changes: object) -> Measurement:
    """A measurement of a well-behaved function, with some fields changed."""
    base = dict(
        port=8080,
        grace=10.0,
        ready_seconds=0.5,
        answers=(OK, OK),
        in_flight=Answer(404),
        exit_seconds=1.0,
        output=("a line",),
    )
    return Measurement(**{**base, **changes})  # type: ignore[arg-type]


def by_factor(m: Measurement | None, code: str = CLEAN) -> dict[int, str]:
    return {v.factor: v.status for v in judge(subject(code), m, 3.0)}


def test_a_pass_always_says_what_was_looked_at() -> None:
    """No finding is a pass with evidence; the worst finding wins and the others are counted."""
    v = verdict("fx", 6, [], "nothing kept")
    assert (v.status, v.evidence, v.name) == ("pass", "nothing kept", "processes")
    v = verdict("fx", 6, [Finding("warn", "w"), Finding("fail", "f1"), Finding("fail", "f2")], "")
    assert (v.status, v.evidence) == ("fail", "f1 (and 2 more)")


def test_a_well_behaved_function_passes_all_twelve() -> None:
    """Clean code and a clean run: twelve passes, each with evidence."""
    verdicts = judge(subject(CLEAN), measured(), 3.0)
    assert [v.status for v in verdicts] == ["pass"] * 12
    assert all(v.evidence for v in verdicts)


def test_not_measured_is_a_warn_never_a_pass() -> None:
    """Without a run, the measured factors (6, 7, 9, 11) warn and say why."""
    assert {f for f, s in by_factor(None).items() if s != "pass"} == {6, 7, 9, 11}
    assert set(by_factor(None).values()) == {"pass", "warn"}


def test_never_ready_fails_port_binding_and_warns_the_rest() -> None:
    """A function that never listens fails factor 7; what needed it running warns."""
    statuses = by_factor(measured(ready_seconds=None, start_problem="exited", answers=()))
    assert statuses[7] == "fail" and (statuses[6], statuses[9], statuses[11]) == ("warn",) * 3


def test_slow_start_dropped_request_and_kill_fail_disposability() -> None:
    """Slow to ready, the in-flight request unanswered, or killed at the grace period: fail 9."""
    assert by_factor(measured(ready_seconds=4.2))[9] == "fail"
    assert by_factor(measured(in_flight=Answer(None, error="reset")))[9] == "fail"
    assert by_factor(measured(exit_seconds=None))[9] == "fail"
    assert {f for f, s in by_factor(measured(exit_seconds=None)).items() if s != "pass"} == {9}


def test_answers_that_depend_on_earlier_requests_fail_processes() -> None:
    """Different answers to one request fail 6 when a new replica answers as the first did;
    when it answers otherwise too, it may be time or randomness: warn."""
    one, two = Answer(200, b"visitor 1"), Answer(200, b"visitor 2")
    assert by_factor(measured(answers=(one, two), fresh=one))[6] == "fail"
    assert by_factor(measured(answers=(one, two), fresh=Answer(200, b"visitor 3")))[6] == "warn"


def test_files_written_split_into_state_and_logs() -> None:
    """A data file written beside the code fails 6; a log file fails 11 (and only 11)."""
    assert {
        f for f, s in by_factor(measured(written=("code/data.txt",))).items() if s != "pass"
    } == {6}
    assert {
        f for f, s in by_factor(measured(written=("code/app.log",))).items() if s != "pass"
    } == {11}


def test_changed_files() -> None:
    """New files and files whose size or time changed are written ones."""
    before = {"main.py": (10, 1), "a": (1, 1)}
    after = {"main.py": (10, 1), "a": (2, 1), "b": (0, 5)}
    assert changed(before, after) == ["a", "b"]
