"""The ledger's clock, shared by every lane that claims rows (deliveries, posts, confirmation mails,
subscriber imports): how long a claim lives without word from its worker, when a row handed to a task
that never ran is handed out again, and how often a long task says it is still alive.

One setting (SYNDICATE_CLAIM_TIMEOUT, seconds) sets them all, in fixed proportions: a worker refreshes
its claim 15 times per timeout, so only a dead one loses it, and a lost task is noticed in a third of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

DEFAULT_CLAIM = 900  # seconds: longer than any SMTP or HTTP deadline a worker may block on between refreshes
SHORTEST_CLAIM = 60  # below this, a worker blocked on one slow server (30 s) could lose a live claim


@dataclass(frozen=True)
class Leases:
    claim: timedelta = timedelta(seconds=DEFAULT_CLAIM)  # a claim nobody refreshed: its worker died

    @property
    def requeue(self) -> timedelta:
        """A row handed to a task and not claimed for this long: the task was lost (broker restarted,
        worker killed with it prefetched); the tick hands it out again."""
        return self.claim / 3

    @property
    def refresh(self) -> float:
        """Seconds between a long task's claim refreshes."""
        return self.claim.total_seconds() / 15

    @property
    def stuck(self) -> timedelta:
        """A lane with work due and nothing done for this long is stuck (/healthz): longer than any healthy
        pause, since a dead worker's rows come back only after `claim`."""
        return self.claim
