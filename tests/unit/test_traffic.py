"""spec.traffic: validation, the latest revision filled in, weighted picks and tags."""

from __future__ import annotations

import random
from collections import Counter

from knfn.serving import traffic


def test_no_traffic_block_sends_everything_to_the_latest() -> None:
    """Without spec.traffic, 100% goes to the latest ready revision."""
    targets, problems = traffic.parse(None)
    split = traffic.resolve(targets, "hello-00002")
    assert problems == [] and split.weights == (("hello-00002", 100),)


def test_each_bad_entry_is_named() -> None:
    """Both name and latest, a bad percent, a bad or repeated tag and a wrong sum are reported."""
    _, problems = traffic.parse(
        [
            {"revisionName": "a", "latestRevision": True, "percent": 50, "tag": "Bad_Tag"},
            {"percent": 150, "tag": "x"},
            {"latestRevision": True, "percent": 10, "tag": "x"},
        ]
    )
    text = "\n".join(problems)
    assert "spec.traffic[0]: exactly one of revisionName and latestRevision" in text
    assert "spec.traffic[0].tag: 'Bad_Tag'" in text
    assert "spec.traffic[1]: exactly one" in text
    assert "spec.traffic[1].percent: 150" in text
    assert "spec.traffic[2].tag: 'x' is used twice" in text
    assert "sum to 60, not 100" in text


def test_eighty_twenty_split_lands_within_tolerance() -> None:
    """An 80/20 split over 10,000 picks lands within one percentage point."""
    targets, problems = traffic.parse(
        [
            {"revisionName": "hello-00001", "percent": 80},
            {"latestRevision": True, "percent": 20, "tag": "canary"},
        ]
    )
    split = traffic.resolve(targets, "hello-00002")
    rng = random.Random(7)
    counts = Counter(split.pick(rng.random) for _ in range(10_000))
    assert problems == []
    assert abs(counts["hello-00001"] - 8000) < 100 and abs(counts["hello-00002"] - 2000) < 100
    assert split.tags == {"canary": "hello-00002"}
    assert split.percent_of("hello-00002") == 20


def test_zero_percent_tag_takes_no_default_traffic() -> None:
    """A tagged 0% target is reachable by its tag only."""
    targets, _ = traffic.parse(
        [
            {"latestRevision": True, "percent": 100},
            {"revisionName": "old", "percent": 0, "tag": "v1"},
        ]
    )
    split = traffic.resolve(targets, "new")
    assert {split.pick() for _ in range(200)} == {"new"} and split.tags == {"v1": "old"}


def test_nothing_ready_means_no_pick() -> None:
    """Before any revision is ready, latestRevision resolves to nothing."""
    targets, _ = traffic.parse(None)
    assert traffic.resolve(targets, None).pick() is None
