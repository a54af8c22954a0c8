"""The error of eventing's manifest readers: every problem names the field it is about.

A spec is checked whole, so one error may carry several problems (all reported at once, as
Knative's webhook does with ``apis.FieldError.Also``). Loaders turn it into a
:class:`~knfn.manifests.ManifestError` with :meth:`DeliveryError.at`, which adds the file and the
object; nobody parses the message back into a field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple, Self

from knfn.errors import KnfnError

if TYPE_CHECKING:
    from knfn.manifests import Manifest, ManifestError


class Problem(NamedTuple):
    field: str  # e.g. spec.delivery.retry
    problem: str  # e.g. -1 must be a whole number >= 0

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class DeliveryError(KnfnError, ValueError):
    """A delivery spec or destination that Knative refuses, or one that names nothing known."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        if not self.problems:
            raise ValueError("a DeliveryError needs at least one problem")
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def of(cls, fld: str, problem: str) -> Self:
        return cls([Problem(fld, problem)])

    @property
    def field(self) -> str:
        """The field of the first problem."""
        return self.problems[0].field

    @property
    def problem(self) -> str:
        """The first problem, with the others after it, each with its field."""
        rest = "; ".join(str(p) for p in self.problems[1:])
        return self.problems[0].problem + (f" (also {rest})" if rest else "")

    def at(self, obj: Manifest) -> ManifestError:
        """The same problems, located in a manifest object's file."""
        return obj.error(self.field, self.problem)


class UnresolvedDestination(DeliveryError):
    """A valid destination whose ``ref`` names nothing in the manifests (or nothing knfn can
    address): the cluster accepts it and leaves its owner not ready."""
