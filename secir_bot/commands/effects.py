"""Effects as JSON, for the durable effect queue (``store.effects``).

Each effect is stored as ``{"type": "SendMail", ...its fields}``; attachments carry their
bytes in base64 and front ends by their value. ``loads(dumps(e)) == e`` for every effect.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from secir_bot.commands.base import (
    Announce,
    Attachment,
    Effect,
    Front,
    InviteToRoom,
    NotifyAdmins,
    RemoveFromRooms,
    RotateRoomKeys,
    SendMail,
    TrustDevice,
    WakeOutbox,
)

_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        SendMail,
        Announce,
        NotifyAdmins,
        InviteToRoom,
        RemoveFromRooms,
        RotateRoomKeys,
        TrustDevice,
        WakeOutbox,
    )
}


def _plain(value: object) -> object:
    if isinstance(value, Attachment):
        return {
            "filename": value.filename,
            "content_type": value.content_type,
            "data": base64.b64encode(value.data).decode("ascii"),
        }
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value  # str (a Front is a str too)


def dumps(effect: Effect) -> str:
    fields = {f.name: _plain(getattr(effect, f.name)) for f in dataclasses.fields(effect)}
    return json.dumps({"type": type(effect).__name__, **fields}, ensure_ascii=False)


def loads(text: str) -> Effect:
    data = json.loads(text)
    cls = _TYPES[data.pop("type")]
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        raw = data[f.name]
        if f.name == "attachments":
            values[f.name] = tuple(
                Attachment(a["filename"], a["content_type"], base64.b64decode(a["data"]))
                for a in raw
            )
        elif f.name == "room":
            values[f.name] = Front(raw)
        elif isinstance(raw, list):
            values[f.name] = tuple(raw)
        else:
            values[f.name] = raw
    effect: Effect = cls(**values)
    return effect
