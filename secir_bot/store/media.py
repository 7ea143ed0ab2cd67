"""Files of Matrix messages, kept from intake until their event is decided (issue 10).

The Matrix bridge downloads a member's encrypted file, checks its hash and decrypts it
before the event becomes an inbox item to decide (``bridges/matrix/parked.py``); what it
got, or why it got nothing, is a row here, so that a restart never depends on the
homeserver still having the file and a step never waits on the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from secir_bot.store.base import Repository


@dataclass(frozen=True)
class StoredMedia:
    """A media event's file, or the reason it could not be had (``problem``)."""

    event_id: str
    filename: str
    content_type: str
    data: bytes | None
    problem: str | None


class Media(Repository):
    def put(self, media: StoredMedia) -> None:
        """Keep (or replace: a second download after a restart) a media event's file."""
        with self.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO media"
                " (event_id, filename, content_type, data, problem, created_at)"
                " VALUES (?,?,?,?,?,?)",
                [
                    media.event_id,
                    media.filename,
                    media.content_type,
                    media.data,
                    media.problem,
                    time.time(),
                ],
            )

    def fetched(self, event_id: str) -> bool:
        """Whether a media event's file is here (not only why it could not be had)."""
        row = self.db.execute(
            "SELECT 1 FROM media WHERE event_id = ? AND data IS NOT NULL", [event_id]
        ).fetchone()
        return row is not None

    def get(self, event_id: str) -> StoredMedia | None:
        row = self.db.execute(
            "SELECT filename, content_type, data, problem FROM media WHERE event_id = ?",
            [event_id],
        ).fetchone()
        if row is None:
            return None
        data = None if row[2] is None else bytes(row[2])
        return StoredMedia(event_id, str(row[0]), str(row[1]), data, row[3])
