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
    """Both name and latest, neither, a bad percent, a bad or repeated tag and a wrong sum are
    reported."""
    _, problems = traffic.parse(
        [
            {"revisionName": "a", "latestRevision": True, "percent": 50, "tag": "Bad_Tag"},
            {"latestRevision": False, "percent": 150, "tag": "x"},
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


def test_an_entry_without_name_or_latest_follows_the_latest() -> None:
    """route_defaults.go: latestRevision defaults to true when no revisionName is given."""
    targets, problems = traffic.parse([{"percent": 100}])
    assert problems == [] and traffic.resolve(targets, "new").weights == (("new", 100),)


def test_tags_must_be_dns_1035_labels() -> None:
    """route_validation.go: a tag starting with a digit is refused; an empty tag is no tag."""
    _, problems = traffic.parse([{"latestRevision": True, "percent": 100, "tag": "1canary"}])
    assert problems == ["spec.traffic[0].tag: '1canary' is not a DNS-1035 label: it must "
                        "start with a letter (a-z)"]  # fmt: skip
    targets, problems = traffic.parse([{"latestRevision": True, "percent": 100, "tag": ""}])
    assert problems == [] and targets[0].tag is None


def test_every_named_revision_is_referenced_whatever_its_percent() -> None:
    """A revision at 0% without a tag is still active (labeler/metasync.go), as is the latest."""
    targets, _ = traffic.parse(
        [{"revisionName": "old", "percent": 0}, {"latestRevision": True, "percent": 100}]
    )
    assert traffic.referenced(targets, "new") == {"old", "new"}
    assert traffic.referenced(targets, None) == {"old"}
