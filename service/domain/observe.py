"""What the domain tells an observer (metrics) as it runs, as a Protocol: the domain depends
on no metrics library, and the composition root passes in whatever records these."""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """Receives the domain's events; every method must return at once and never raise."""

    def breaker_changed(self, base_url: str, state: str) -> None:
        """A PowerSchool host's circuit breaker entered ``state``: closed, half_open or open."""

    def delivery_attempt(self, district_id: str, outcome: str) -> None:
        """A delivery attempt ended: written, skipped, cancelled, failed or retry."""


class NoObserver:
    """Observes nothing (the default)."""

    def breaker_changed(self, base_url: str, state: str) -> None:
        """Ignore the change."""

    def delivery_attempt(self, district_id: str, outcome: str) -> None:
        """Ignore the attempt."""
