"""Accepted posts, and the ids that name them on the channels (``links``).

A link maps a Matrix event id or a Message-ID (the author's own, or the list's copy) to a
post, so that a reply on either side finds the post it answers.
"""

from __future__ import annotations

import json

from secir_bot.model import Channel, LinkKind, Post
from secir_bot.store.base import Repository, Tx, dict_rows
from secir_bot.store.members import Members


def insert(tx: Tx, post: Post, now: float) -> None:
    tx.execute(
        "INSERT INTO posts (uid, origin, author_id, subject, body, parent_uid,"
        " root_uid, attachments, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            post.uid,
            post.origin.value,
            post.author.id,
            post.subject,
            post.body,
            post.parent_uid,
            post.root_uid,
            json.dumps(list(post.attachments)),
            now,
        ],
    )


def link(tx: Tx, kind: LinkKind, value: str, post_uid: str) -> None:
    tx.execute(
        "INSERT OR IGNORE INTO links (kind, value, post_uid) VALUES (?,?,?)",
        [kind, value, post_uid],
    )


class Posts(Repository):
    def __init__(self, members: Members) -> None:
        super().__init__(members.db)
        self.members = members  # a post's author is a member

    def get(self, uid: str) -> Post | None:
        found = dict_rows(self.db.execute("SELECT * FROM posts WHERE uid = ?", [uid]))
        if not found:
            return None
        row = found[0]
        author = self.members.get(row["author_id"])
        assert author is not None
        return Post(
            uid=row["uid"],
            origin=Channel(row["origin"]),
            author=author,
            subject=row["subject"],
            body=row["body"],
            parent_uid=row["parent_uid"],
            root_uid=row["root_uid"],
            attachments=tuple(json.loads(row["attachments"] or "[]")),
        )

    def for_link(self, kind: LinkKind, value: str) -> Post | None:
        row = self.db.execute(
            "SELECT post_uid FROM links WHERE kind = ? AND value = ?", [kind, value]
        ).fetchone()
        return None if row is None else self.get(row[0])

    def links_of(self, post_uid: str, kind: LinkKind) -> list[str]:
        rows = self.db.execute(
            "SELECT value FROM links WHERE post_uid = ? AND kind = ? ORDER BY rowid",
            [post_uid, kind],
        )
        return [r[0] for r in rows.fetchall()]

    def add_link(self, kind: LinkKind, value: str, post_uid: str) -> None:
        with self.transaction() as tx:
            link(tx, kind, value, post_uid)

    def last_by(self, member_id: int) -> float | None:
        """When the member last posted (a relayed post), if ever."""
        row = self.db.execute(
            "SELECT max(created_at) FROM posts WHERE author_id = ?", [member_id]
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])
