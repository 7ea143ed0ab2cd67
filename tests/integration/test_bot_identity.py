"""The bot's cross-signing identity made by ``run`` for a store that has none (a store from
before cross-signing), and checked on the server."""

from __future__ import annotations

import json

import pytest

from secir_bot import provision
from secir_bot.bridges.matrix.keys import user_keys
from secir_bot.sandbox.world import World


async def test_run_makes_the_identity_when_the_store_has_none(
    world_unstarted: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = world_unstarted

    async def before_cross_signing(*args: object, **kwargs: object) -> str:
        return ""

    # An installation made before this release: init did not set up cross-signing.
    monkeypatch.setattr(provision, "bootstrap_cross_signing", before_cross_signing)
    await world.setup()
    assert world.config is not None and world.admin is not None
    held = world.config.store_path / "matrix" / "cross-signing.json"
    assert not held.exists()
    monkeypatch.undo()
    app = await world.start_bot()
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "cross-signing identity" in e.body,
        what="the admins told about the recovery file",
    )
    assert "matrix-master-key.recovery.json" in notice.body and "offline" in notice.body
    master = json.loads(held.read_text())["master_public"]
    answer = await app.matrix.client.api(
        "POST", "/v3/keys/query", {"device_keys": {world.config.matrix.user_id: []}}
    )
    served = user_keys(answer, world.config.matrix.user_id)
    assert served.master == master
    assert served.devices[app.matrix.creds.device_id].cross_signed
