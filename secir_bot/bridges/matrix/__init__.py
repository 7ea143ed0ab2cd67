"""The Matrix bridge: matrix-nio with end-to-end encryption (vodozemac).

client.py   the bot's device: login, the hardened nio client, raw API calls
sync.py     receiving: the sync loop, durable before anything is decided
trust.py    which devices get room keys, whose messages count as a member's
send.py     sending into a room (the outbox's Matrix deliveries)
bridge.py   ``MatrixBridge``, composing the above behind the Bridge protocol
"""

from secir_bot.bridges.matrix.bridge import MatrixBridge
from secir_bot.bridges.matrix.client import Credentials, login_once
from secir_bot.bridges.matrix.xsign import bootstrap_cross_signing

__all__ = ["Credentials", "MatrixBridge", "bootstrap_cross_signing", "login_once"]
