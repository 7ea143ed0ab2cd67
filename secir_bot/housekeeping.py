"""Housekeeping: the store forgets what it no longer needs (issue 6: growth).

Raw bytes of every received message and the payload of every delivery are kept while they
may still be needed (a decision to make, a delivery to retry) and for
``store.retention_days`` after that, for the admins' inquiries; then they are erased.
"""

from __future__ import annotations

import asyncio
import logging
import time

from secir_bot.store import Store
from secir_bot.tasks import raise_if_cancelled

log = logging.getLogger(__name__)

EVERY = 6 * 3600.0  # seconds between two purges


def purge(store: Store, retention_days: float, now: float | None = None) -> dict[str, int]:
    """Erase what is older than the retention period; return how many rows were emptied."""
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    counts = store.purge(cutoff)
    uploads = store.outbox.forget_uploads()  # needed only while their rows are pending
    if uploads:
        log.info("forgot the uploads of %d Matrix file(s) sent or given up", uploads)
    if any(counts.values()):
        log.info(
            "retention: erased the raw bytes of %d inbox item(s), the payload of %d sent "
            "delivery(ies) and %d file(s) of Matrix messages older than %g days",
            counts["inbox"],
            counts["outbox"],
            counts["media"],
            retention_days,
        )
    return counts


async def run(store: Store, retention_days: float) -> None:
    """Purge at start, then every six hours, for as long as the app runs."""
    while True:
        raise_if_cancelled()
        purge(store, retention_days)
        await asyncio.sleep(EVERY)
