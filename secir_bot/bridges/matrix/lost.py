"""What the bot says about room messages it cannot decrypt, and to whom.

A member's client may withhold a room key from the bot on purpose (``m.room_key.withheld``,
with a code saying why); or the key may simply never come. Either way the message is lost
for the mailing list, and the member should know, where they look: in the room, in the
thread of the lost message, with advice that works in Element. The admins hear of it
once per member and code, not once per message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from secir_bot.model import Channel, DeliveryKind
from secir_bot.store import NewDelivery

# What each withheld code means for the member, and what fixes it in Element.
ADVICE = {
    "m.unverified": (
        "your Matrix client shares message keys only with sessions you verified, and you "
        "have not verified the list bot. In Element, turn off Settings > Security & "
        'Privacy > "Never send encrypted messages to unverified sessions" (or the same '
        "setting in this room's settings), or verify the bot from its profile"
    ),
    "m.blacklisted": (
        "your Matrix client blocked the list bot's session. In Element, open the bot's "
        "profile and unblock its session"
    ),
    "m.unauthorised": "your Matrix client decided that the list bot may not have the key",
    "m.unavailable": "your Matrix client no longer had the key to give",
    "m.no_olm": "your Matrix client could not open an encrypted channel to the list bot",
}


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts) / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "earlier"


def thread_of(event: dict[str, Any]) -> str:
    """The root of the thread an event is in (relations travel in the clear)."""
    rel = (event.get("content") or {}).get("m.relates_to")
    if isinstance(rel, dict) and rel.get("rel_type") == "m.thread":
        root = rel.get("event_id")
        if isinstance(root, str) and root:
            return root
    return str(event.get("event_id", ""))


def member_notice(room_id: str, event: dict[str, Any], code: str) -> NewDelivery:
    """A notice to the sender of a lost message, in its thread."""
    sender = str(event.get("sender", ""))
    event_id = str(event.get("event_id", ""))
    why = ADVICE.get(code, f"your Matrix client did not share the key (code {code[:40]})")
    body = (
        f"{sender}: your message of {_when(event.get('origin_server_ts'))} ({event_id}) did "
        f"not reach the mailing list. The bot cannot read it: {why} "
        f"(code {code[:40]}). Then send the message again."
    )
    content = {
        "msgtype": "m.notice",
        "body": body,
        "m.mentions": {"user_ids": [sender]},
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": thread_of(event),
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": event_id},
        },
    }
    return NewDelivery(
        channel=Channel.MATRIX,
        target=room_id,
        kind=DeliveryKind.NOTICE,
        payload=json.dumps({"content": content}).encode(),
    )


def admin_withheld(sender: str, event_id: str, code: str) -> str:
    why = ADVICE.get(code, f"code {code[:40]}")
    return (
        f"The Matrix client of {sender} withheld the key of their message {event_id} from "
        f"the bot (code {code[:40]}): {why}. The message was not relayed; the member was "
        "told in the room, in its thread. Further messages of theirs lost the same way are "
        "told to them only."
    )


def admin_never_came(sender: str, event_id: str, minutes: float) -> str:
    return (
        f"An event from {sender} ({event_id}) in the incident room could not be decrypted "
        f"for {minutes:.0f} min: the bot never received its key, and the sender's client "
        "did not say it withheld it either (an older client, or one that failed to reach the "
        "bot's device). It stays waiting for a week in case the key arrives. Ask the sender "
        "to check that their client shares keys with all sessions, and to send it again."
    )
