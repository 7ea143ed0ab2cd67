"""What the bot pins about members' Matrix keys, with a real store (the Synapse-backed
tests show the same end to end)."""

from __future__ import annotations

from pathlib import Path

from secir_bot.bridges.matrix.keys import DeviceKeys, UserKeys
from secir_bot.bridges.matrix.pins import Pins
from secir_bot.store import Store

USER = "@anna:nic.test"


def _keys(master: str | None, *devices: tuple[str, str, bool]) -> UserKeys:
    return UserKeys(
        USER,
        master,
        "SSK" if master else None,
        {d: DeviceKeys(USER, d, ed, "C-" + ed, signed, {}) for d, ed, signed in devices},
    )


def _pins(tmp_path: Path) -> tuple[Store, Pins, list[str]]:
    store = Store.open(tmp_path, create=True)
    told: list[str] = []
    return store, Pins(store, told.append), told


def test_first_look_pins_silently_then_new_devices_are_told_unless_signed(
    tmp_path: Path,
) -> None:
    store, pins, told = _pins(tmp_path)
    assert pins.judge(_keys(None, ("D1", "ed1", False), ("D2", "ed2", False))) == []
    assert told == []
    pins.judge(_keys(None, ("D1", "ed1", False), ("D2", "ed2", False), ("D3", "ed3", False)))
    assert len(told) == 1 and "D3" in told[0] and "trusted on first use" in told[0]
    # The member sets up cross-signing and signs a new device: pinned, and silent.
    pins.judge(_keys("M1", ("D1", "ed1", True), ("D4", "ed4", True)))
    assert len(told) == 1
    assert (
        store.devices.identity(USER) is not None and store.devices.identity(USER).master_key == "M1"  # type: ignore[union-attr]
    )
    assert store.devices.get(USER, "D4").how == "cross-signing"  # type: ignore[union-attr]
    assert store.devices.get(USER, "D1").how == "cross-signing"  # type: ignore[union-attr]


def test_a_changed_identity_is_told_once_and_waits_for_an_admin(tmp_path: Path) -> None:
    store, pins, told = _pins(tmp_path)
    pins.judge(_keys("M1", ("D1", "ed1", True)))
    member = pins.judge(_keys("M2", ("D1", "ed1", False)))
    assert [m.user_id for m in member] == [USER]
    assert len(told) == 1 and "M1" in told[0] and "M2" in told[0]
    assert f"secir-bot trust {USER}" in told[0]
    assert pins.judge(_keys("M2", ("D1", "ed1", False))) == [] and len(told) == 1
    pin = store.devices.identity(USER)
    assert pin is not None and (pin.state, pin.master_key, pin.pending_key) == (
        "changed",
        "M1",
        "M2",
    )
    assert pins.confirm(USER, "admin") == (
        True,
        f"the Matrix identity of {USER} is now M2 (confirmed)",
    )
    pin = store.devices.identity(USER)
    assert pin is not None and (pin.state, pin.master_key) == ("pinned", "M2")
    assert [w for _, _, _, w, _ in store.devices.trust_log(USER) if w.startswith("identity")] == [
        "identity pinned",
        "identity changed",
        "identity pinned",
    ]


def test_nothing_to_confirm(tmp_path: Path) -> None:
    _, pins, _ = _pins(tmp_path)
    assert pins.confirm(USER, "admin")[0] is False
    pins.judge(_keys("M1", ("D1", "ed1", True)))
    assert pins.confirm(USER, "admin")[0] is False


def test_a_rekeyed_device_is_blocked_once(tmp_path: Path) -> None:
    store, pins, told = _pins(tmp_path)
    pins.judge(_keys(None, ("D1", "ed1", False)))
    pins.judge(_keys(None, ("D1", "forged", False)))
    pins.judge(_keys(None, ("D1", "forged-again", False)))
    assert len(told) == 1 and "changed" in told[0] and "blocked" in told[0]
    rec = store.devices.get(USER, "D1")
    assert rec is not None and (rec.state, rec.ed25519) == ("blocked", "ed1")
