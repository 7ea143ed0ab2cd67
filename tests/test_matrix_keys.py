"""Key objects as a homeserver serves them: only what verifies signature by signature counts
(pure functions; the Synapse-backed tests show the same end to end)."""

from __future__ import annotations

import copy
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secir_bot.bridges.matrix.keys import signed_by, signing_bytes, user_keys
from secir_bot.bridges.matrix.xsign import _public, key_object, sign

USER = "@anna:nic.test"


def _device(device_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    obj = {
        "user_id": USER,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"ed25519:{device_id}": _public(key), f"curve25519:{device_id}": "Y3VydmU"},
        "unsigned": {"device_display_name": "phone"},
    }
    signature = sign(obj, USER, key)["signatures"][USER][f"ed25519:{_public(key)}"]
    obj["signatures"] = {USER: {f"ed25519:{device_id}": signature}}
    return obj


def _answer() -> tuple[dict[str, Any], dict[str, Ed25519PrivateKey]]:
    keys = {name: Ed25519PrivateKey.generate() for name in ("master", "ssk", "dev1", "dev2")}
    master = key_object(USER, "master", keys["master"])
    ssk = sign(key_object(USER, "self_signing", keys["ssk"]), USER, keys["master"])
    dev1 = sign(_device("DEV1", keys["dev1"]), USER, keys["ssk"])
    dev2 = _device("DEV2", keys["dev2"])
    answer = {
        "device_keys": {USER: {"DEV1": dev1, "DEV2": dev2}},
        "master_keys": {USER: master},
        "self_signing_keys": {USER: ssk},
    }
    return answer, keys


def test_signing_bytes_leave_out_signatures_and_unsigned_and_are_canonical() -> None:
    a = {"b": 1, "a": "é", "signatures": {"x": {}}, "unsigned": {"y": 1}}
    assert signing_bytes(a) == '{"a":"é","b":1}'.encode()


def test_a_cross_signed_device_and_an_unsigned_one() -> None:
    answer, keys = _answer()
    got = user_keys(answer, USER)
    assert got.master == _public(keys["master"])
    assert got.self_signing == _public(keys["ssk"])
    assert got.devices["DEV1"].cross_signed
    assert not got.devices["DEV2"].cross_signed
    assert got.rejected == ()


def test_a_device_whose_keys_were_changed_after_signing_is_rejected() -> None:
    answer, _ = _answer()
    answer["device_keys"][USER]["DEV2"]["keys"]["curve25519:DEV2"] = "b3RoZXI"
    got = user_keys(answer, USER)
    assert "DEV2" not in got.devices and got.rejected == ("DEV2",)


def test_a_device_object_filed_under_another_id_is_rejected() -> None:
    answer, _ = _answer()
    answer["device_keys"][USER]["DEV3"] = copy.deepcopy(answer["device_keys"][USER]["DEV2"])
    assert "DEV3" in user_keys(answer, USER).rejected


def test_a_self_signing_key_the_master_did_not_sign_counts_for_nothing() -> None:
    answer, _ = _answer()
    other = Ed25519PrivateKey.generate()
    forged = sign(key_object(USER, "self_signing", Ed25519PrivateKey.generate()), USER, other)
    answer["self_signing_keys"][USER] = forged
    got = user_keys(answer, USER)
    assert got.self_signing is None
    assert not got.devices["DEV1"].cross_signed


def test_a_key_with_the_wrong_usage_or_owner_is_not_a_master_key() -> None:
    answer, keys = _answer()
    answer["master_keys"][USER] = key_object(USER, "self_signing", keys["master"])
    assert user_keys(answer, USER).master is None
    answer, keys = _answer()
    answer["master_keys"][USER] = key_object("@mallory:evil.test", "master", keys["master"])
    assert user_keys(answer, USER).master is None


def test_signed_by_rejects_garbage_without_raising() -> None:
    assert not signed_by(None, USER, "X", "Y")
    assert not signed_by({"signatures": {USER: {"ed25519:X": "!!"}}}, USER, "X", "Y")
    assert not signed_by({"signatures": "no"}, USER, "X", "Y")


def test_a_user_without_anything_served() -> None:
    got = user_keys({"device_keys": {}}, USER)
    assert got.master is None and got.devices == {}
