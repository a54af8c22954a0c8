"""The replica budget (knfn/serving/budget.py): admission by memory, activation, fairness."""

from __future__ import annotations

from pathlib import Path

import pytest

from knfn.serving.budget import (
    MEMORY,
    PER_REVISION,
    TOTAL,
    BindingLog,
    BudgetError,
    Costs,
    Demand,
    Memory,
    Reserve,
    available_memory,
    fair_shares,
    plan,
    replica_pss,
)

MiB = 1024 * 1024


def mem(free_mib: float, reserve_mib: float = 100) -> Memory:
    """MemAvailable leaving free_mib above a reserve of reserve_mib."""
    return Memory(int((free_mib + reserve_mib) * MiB), int(reserve_mib * MiB))


def d(name: str, wanted: int, active: int = 0, ready: int | None = None, **kw: object) -> Demand:
    cost = int(kw.pop("cost_mib", 10)) * MiB  # type: ignore[call-overload]
    ready = active if ready is None else ready
    return Demand(name, wanted, active, ready, cost=cost, **kw)  # type: ignore[arg-type]


def test_admits_what_is_wanted_while_memory_allows() -> None:
    """With room for 25 replicas of 10 MiB, hello gets the 20 it wants and nothing binds."""
    got = plan([d("hello", 20, 1), d("query", 1, 1)], mem(250))
    assert got.allowed == {"hello": 20, "query": 1}
    assert got.held == {} and got.yields == {}


def test_memory_binds_and_says_so() -> None:
    """Room for 5 more replicas: hello grows by 5 and is held, for memory."""
    got = plan([d("hello", 20, 1)], mem(55))
    assert got.allowed == {"hello": 6}
    assert got.held == {"hello": MEMORY}


def test_starting_replicas_are_charged_before_memory_shows_them() -> None:
    """Replicas started but not ready count against MemAvailable: 4 starting use 40 of 55 MiB."""
    got = plan([d("hello", 20, 5, ready=1)], mem(55))
    assert got.allowed == {"hello": 6}


def test_a_spare_being_started_is_charged_as_a_starting_replica() -> None:
    """A template's spare on its way takes memory MemAvailable does not show yet: one less fits."""
    assert plan([d("hello", 20, 1)], mem(55)).allowed == {"hello": 6}
    got = plan([d("hello", 20, 1, spares_starting=1)], mem(55))
    assert got.allowed == {"hello": 5} and got.held == {"hello": MEMORY}


def test_running_replicas_are_never_shed_for_memory() -> None:
    """Memory below the reserve admits nothing new but retires nothing either."""
    got = plan([d("hello", 10, 8), d("query", 2, 1)], mem(-500))
    assert got.allowed == {"hello": 8, "query": 1}
    assert got.held == {"hello": MEMORY, "query": MEMORY}


def test_growth_goes_first_to_whoever_has_fewest() -> None:
    """Room for 6 more: query (1 running) and catalog (0) catch up before hello grows."""
    demands = [d("hello", 20, 4), d("query", 5, 1), d("catalog", 3, 0)]
    got = plan(demands, mem(60))
    assert got.allowed == {"hello": 4, "query": 4, "catalog": 3}
    assert set(got.held) == {"hello", "query"}


def test_cheaper_replicas_fit_where_dearer_do_not() -> None:
    """15 MiB left: a 40 MiB spawned replica does not fit, three 5 MiB forked ones do."""
    got = plan([d("spawned", 2, 1, cost_mib=40), d("forked", 4, 1, cost_mib=5)], mem(15))
    assert got.allowed == {"spawned": 1, "forked": 4}


def test_activation_takes_a_replica_from_the_largest_surplus() -> None:
    """Memory spent, query waits at zero: hello (far above its fair share) yields one."""
    demands = [
        d("hello", 20, 18),
        d("thumbnail", 3, 3),
        d("query", 1, 0, in_flight=1, activating=True),
    ]
    got = plan(demands, mem(0))
    assert got.allowed == {"hello": 17, "thumbnail": 3, "query": 1}
    assert got.yields == {"hello": 1}


def test_activation_takes_an_idle_single_replica_before_going_over() -> None:
    """Every revision at one replica: an idle one yields; a busy one is never taken."""
    demands = [
        d("busy", 1, 1, in_flight=3),
        d("idle", 1, 1, in_flight=0),
        d("query", 1, 0, in_flight=1, activating=True),
    ]
    got = plan(demands, None, total=2)
    assert got.yields == {"idle": 1}
    assert got.allowed == {"busy": 1, "idle": 0, "query": 1}


def test_activation_is_never_blocked() -> None:
    """Nobody can yield (one busy replica each, no memory): the first replica starts anyway."""
    demands = [d("busy", 1, 1, in_flight=3), d("query", 1, 0, activating=True)]
    got = plan(demands, mem(-100))
    assert got.allowed["query"] == 1
    assert got.yields == {}


def test_activation_gets_only_its_first_replica_over_budget() -> None:
    """A waiting revision that wants 5 gets 1 by activation; the rest waits for room."""
    demands = [d("hello", 8, 8), d("query", 5, 0, activating=True)]
    got = plan(demands, None, total=8)
    assert got.allowed == {"hello": 7, "query": 1}
    assert got.held == {"hello": TOTAL, "query": TOTAL}


def test_a_yielding_revision_does_not_grow_back_in_the_same_plan() -> None:
    """The victim of an activation is not given its replica back from the room it freed."""
    demands = [d("hello", 20, 6, cost_mib=10), d("query", 1, 0, activating=True, cost_mib=5)]
    got = plan(demands, mem(3))
    assert got.yields == {"hello": 1}
    assert got.allowed == {"hello": 5, "query": 1}


def test_no_activation_without_a_waiting_request() -> None:
    """A revision at zero that nobody waits for is admitted only if it fits."""
    got = plan([d("hello", 4, 4), d("query", 1, 0)], None, total=4)
    assert got.allowed == {"hello": 4, "query": 0}
    assert got.yields == {}


def test_per_revision_cap_binds_with_its_own_reason() -> None:
    """--max-replicas-per-revision 4: hello wants 10, gets 4, held by that cap."""
    got = plan([d("hello", 10, 1)], mem(1000), per_revision=4)
    assert got.allowed == {"hello": 4}
    assert got.held == {"hello": PER_REVISION}


def test_total_cap_binds_with_its_own_reason() -> None:
    """--max-replicas 6 over two revisions wanting 5 each: 3 and 3, held by the total cap."""
    got = plan([d("a", 5, 0), d("b", 5, 0)], None, total=6)
    assert got.allowed == {"a": 3, "b": 3}
    assert got.held == {"a": TOTAL, "b": TOTAL}


def test_unroutable_revision_gets_nothing() -> None:
    """wanted 0 (no route reaches it): allowed 0, so its replicas drain."""
    got = plan([d("old", 0, 3)], mem(1000))
    assert got.allowed == {"old": 0} and got.held == {}


@pytest.mark.parametrize(
    ("capacity", "wants", "shares"),
    [
        (10, {"a": 2, "b": 20}, {"a": 2, "b": 8}),
        (9, {"a": 20, "b": 20, "c": 1}, {"a": 4, "b": 4, "c": 1}),
        (3, {"a": 1, "b": 1, "c": 1, "d": 1}, {"a": 0.75, "b": 0.75, "c": 0.75, "d": 0.75}),
    ],
)
def test_fair_shares_are_max_min_fair(
    capacity: int, wants: dict[str, int], shares: dict[str, float]
) -> None:
    """Nobody gets more than it wants; what is left is shared evenly."""
    assert fair_shares(capacity, wants) == shares


# ---- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "of_8gib"),
    [
        ("10%", 858993459),
        ("512Mi", 512 * MiB),
        ("2Gi", 2 * 1024 * MiB),
        ("1G", 10**9),
        ("1.5Gi", 1536 * MiB),
        ("1048576", MiB),
    ],
)
def test_reserve_parses_percentages_and_kubernetes_units(text: str, of_8gib: int) -> None:
    """A reserve is a percentage of memory or bytes with a Kubernetes unit."""
    assert Reserve.parse(text).bytes_of(8 * 1024 * MiB) == of_8gib


@pytest.mark.parametrize("text", ["", "ten", "-1Gi", "5Xi", "95%"])
def test_bad_reserve_says_how_to_write_it(text: str) -> None:
    """A reserve that cannot be read raises BudgetError (a ValueError) quoting it."""
    with pytest.raises(BudgetError, match=repr(text)):
        Reserve.parse(text)


# ---- saying so once ----------------------------------------------------------------------


def test_binding_is_logged_once_then_once_when_released() -> None:
    """One line when it starts to bind, none while it keeps binding, one after 10 s without."""
    log = BindingLog(quiet=10)
    held = {"hello": MEMORY}
    assert log.update(0, held, "hello at 6 of 20") == "replica budget binds: hello at 6 of 20"
    assert [log.update(t, held, "x") for t in (1, 2, 3)] == [None, None, None]
    assert log.update(4, {}, "") is None
    assert log.update(13, held, "x") is None  # bound again before the quiet period ended
    assert log.update(20, {}, "") is None
    assert log.update(23, {}, "") == "replica budget no longer binds"
    assert log.update(24, {}, "") is None


def test_a_new_reason_is_logged() -> None:
    """Binding by memory, then by the total cap too: a second line."""
    log = BindingLog()
    assert log.update(0, {"a": MEMORY}, "a") is not None
    assert log.update(1, {"a": MEMORY, "b": TOTAL}, "b") == "replica budget binds: b"


# ---- the /proc shell -----------------------------------------------------------------------


def test_meminfo_and_pss_are_read_from_proc(tmp_path: Path) -> None:
    """MemAvailable and MemTotal in bytes; a replica's PSS summed over it and its children."""
    (tmp_path / "meminfo").write_text(
        "MemTotal:        8000000 kB\nMemFree:  1 kB\nMemAvailable:    6000000 kB\n"
    )
    for pid, pss_kb, kids in ((10, 2000, "11 "), (11, 3000, ""), (12, 99999, "")):
        (tmp_path / str(pid) / "task" / str(pid)).mkdir(parents=True)
        (tmp_path / str(pid) / "task" / str(pid) / "children").write_text(kids)
        (tmp_path / str(pid) / "smaps_rollup").write_text(
            f"00400000-7ffff [rollup]\nRss: 9 kB\nPss:  {pss_kb} kB\nPss_Anon: 1 kB\n"
        )
    memory = available_memory(Reserve.parse("10%"), tmp_path)
    assert memory == Memory(6000000 * 1024, 800000 * 1024)
    assert replica_pss(10, tmp_path) == 5000 * 1024
    costs = Costs(estimate=32 * MiB)
    costs.measure({"default/hello-00001": [10, 404]}, tmp_path)
    assert costs.of("default/hello-00001") == 5000 * 1024
    assert costs.of("default/query-00001") == 32 * MiB
    # A spare (its arbiter 10 and worker 11) is measured as a replica is, and shown apart.
    costs.measure_spares({"default/hello-00001": 10, "default/query-00001": None}, tmp_path)
    assert costs.spares() == {"default/hello-00001": 5000 * 1024}
    costs.measure_spares({"default/hello-00001": None}, tmp_path)  # taken: its last is kept
    assert costs.spares() == {"default/hello-00001": 5000 * 1024}
    costs.forget(["default/query-00001"])
    assert costs.spares() == {} and costs.measured() == {}


def test_no_proc_means_no_memory_bound(tmp_path: Path) -> None:
    """Without /proc/meminfo (not Linux) the memory bound is off: None."""
    assert available_memory(Reserve.parse("10%"), tmp_path) is None


def test_real_proc_measures_this_process() -> None:
    """On Linux, this test's own PSS is measured and MemAvailable is read."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("reads Linux's /proc")
    assert replica_pss(os.getpid()) > MiB
    memory = available_memory(Reserve.parse("1Gi"))
    assert memory is not None and memory.available > 0 and memory.reserve == 1024 * MiB
