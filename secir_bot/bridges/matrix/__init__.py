"""The Matrix bridge: matrix-nio with end-to-end encryption (vodozemac).

client.py    the bot's device: login, the hardened nio client, raw API calls
sync.py      receiving: the sync loop, durable before anything is decided (+ back-fill)
parked.py    encrypted events decrypted by the bridge, judged, and handed on (or reported)
lost.py      what members and admins are told about messages that stay undecryptable
audience.py  who may read each room (gets its keys); the bot's direct rooms
trust.py     which devices of the audience get room keys, whose messages count
pins.py      the keys and identities the bot pinned; keys.py: key material, checked
xsign.py     the bot's own cross-signing identity
send.py      sending into a room (the outbox's Matrix deliveries)
compose.py   a delivery's content as sent: thread relation, reply mention, edit
render.py    posts and notices as Matrix content JSON (at decision time)
bridge.py    ``MatrixBridge``, composing the above behind the Bridge protocol
"""

from secir_bot.bridges.matrix.bridge import MatrixBridge
from secir_bot.bridges.matrix.client import Credentials, login_once
from secir_bot.bridges.matrix.xsign import bootstrap_cross_signing

__all__ = ["Credentials", "MatrixBridge", "bootstrap_cross_signing", "login_once"]
