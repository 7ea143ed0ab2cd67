"""Tests for secir_bot.crypto with real gpg and the session's test keys (``gpg_world``).

The list keyring is made once per module with ``Keyring.generate`` in a short temp home;
members decrypt and sign with their own homes, exported from the world.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import GpgWorld

from secir_bot.crypto import GpgTimeout, Keyring, inspect_key
from secir_bot.errors import CryptoError

LIST_EMAIL = "secir@lists.secir.test"
ALICE, BOB, CAROL = "alice@test.example", "bob@test.example", "carol@test.example"
DAVE, MALLORY = "dave@test.example", "mallory@test.example"
MEMBERS = (ALICE, BOB, CAROL)
# Lines as a member's client produces them: CRLF, trailing space, a dash line, non-ASCII.
TEXT = "Subject line\r\n\r\nTrailing space \r\n-- \r\nGrüße, Алиса\r\n".encode()


@dataclass(frozen=True)
class ListKey:
    ring: Keyring
    fingerprint: str
    public: str


@pytest.fixture(scope="module")
def list_key(gpg_world: GpgWorld) -> Iterator[ListKey]:
    """The list's keyring: its own new key and the members' public keys."""
    home = Path(tempfile.mkdtemp(prefix="g"))
    ring = Keyring.create(home)
    try:

        async def setup() -> ListKey:
            fpr = await ring.generate("SECIR list", LIST_EMAIL)
            for email in MEMBERS:
                await ring.import_key(gpg_world.export_public(email))
            return ListKey(ring, fpr, await ring.export_public(fpr))

        yield asyncio.run(setup())
    finally:
        ring.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def member_rings(gpg_world: GpgWorld, list_key: ListKey) -> dict[str, Keyring]:
    """Each person's own home (their secret key) plus the list's public key."""
    rings = {}
    for email in (*MEMBERS, DAVE, MALLORY):
        home = gpg_world.make_home([email])
        gpg_world.gpg(home, "--import", input=list_key.public.encode())
        rings[email] = Keyring(home)
    return rings


# -- KeyInfo -----------------------------------------------------------------------------


async def test_normal_key_has_no_problems(gpg_world: GpgWorld) -> None:
    (info,) = await inspect_key(gpg_world.export_public(ALICE))

    assert info.fingerprint == gpg_world.fingerprint(ALICE)
    assert info.v4
    assert info.uids == ("Alice Jansen <alice@test.example>",)
    assert info.emails == (ALICE,)
    assert info.can_sign and info.can_encrypt
    assert not info.expired and not info.revoked and info.expires is None
    assert not info.has_secret
    assert info.problems() == []
    assert info.problems(ALICE) == []
    assert info.problems("Alice@Test.Example") == []


@pytest.mark.parametrize(
    ("email", "problem"),
    [
        ("expired@test.example", "the key has expired"),
        ("revoked@test.example", "the key is revoked"),
        ("signonly@test.example", "the key has no usable encryption subkey"),
    ],
)
async def test_unusable_keys_say_why(gpg_world: GpgWorld, email: str, problem: str) -> None:
    (info,) = await inspect_key(gpg_world.export_public(email))

    assert info.fingerprint == gpg_world.fingerprint(email)
    assert info.problems() == [problem]
    assert info.problems(email) == [problem]


async def test_expired_and_revoked_flags(gpg_world: GpgWorld) -> None:
    (expired,) = await inspect_key(gpg_world.export_public("expired@test.example"))
    (revoked,) = await inspect_key(gpg_world.export_public("revoked@test.example"))

    assert expired.expired and not expired.revoked
    assert expired.expires is not None and expired.expires < 1_600_000_000  # Jan 2020
    assert revoked.revoked and not revoked.expired


async def test_email_must_be_in_a_user_id(gpg_world: GpgWorld) -> None:
    (info,) = await inspect_key(gpg_world.export_public(ALICE))

    assert info.problems(BOB) == [f"no user id of the key carries {BOB}"]


async def test_problems_add_up(gpg_world: GpgWorld) -> None:
    (info,) = await inspect_key(gpg_world.export_public("signonly@test.example"))

    assert info.problems(BOB) == [
        "the key has no usable encryption subkey",
        f"no user id of the key carries {BOB}",
    ]


async def test_inspect_key_reads_every_key_given(gpg_world: GpgWorld) -> None:
    both = gpg_world.export_public(ALICE) + gpg_world.export_public(BOB)

    infos = await inspect_key(both)

    assert sorted(i.fingerprint for i in infos) == sorted(
        [gpg_world.fingerprint(ALICE), gpg_world.fingerprint(BOB)]
    )


async def test_inspect_key_refuses_garbage() -> None:
    with pytest.raises(CryptoError):
        await inspect_key("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n")


# -- the list key ------------------------------------------------------------------------


async def test_generated_list_key(list_key: ListKey) -> None:
    info = await list_key.ring.key(list_key.fingerprint)

    assert info is not None
    assert re.fullmatch(r"[0-9A-F]{40}", list_key.fingerprint)
    assert info.has_secret
    assert info.emails == (LIST_EMAIL,)
    assert info.problems(LIST_EMAIL) == []
    assert "BEGIN PGP PUBLIC KEY BLOCK" in list_key.public


async def test_keyring_lists_imported_member_keys(list_key: ListKey, gpg_world: GpgWorld) -> None:
    keys = {k.fingerprint: k for k in await list_key.ring.keys()}

    for email in MEMBERS:
        assert not keys[gpg_world.fingerprint(email)].has_secret
    assert gpg_world.fingerprint(DAVE) not in keys


async def test_import_of_nothing_is_an_error(list_key: ListKey) -> None:
    with pytest.raises(CryptoError):
        await list_key.ring.import_key("no key here")


def test_keyring_needs_a_home(tmp_path: Path) -> None:
    with pytest.raises(CryptoError):
        Keyring(tmp_path / "absent")


# -- fan-out -----------------------------------------------------------------------------


async def test_sign_encrypt_is_one_gpg_call(list_key: ListKey, gpg_world: GpgWorld) -> None:
    recipients = [gpg_world.fingerprint(e) for e in MEMBERS]
    before = list_key.ring.calls

    await list_key.ring.sign_encrypt(TEXT, recipients, list_key.fingerprint)

    assert list_key.ring.calls - before == 1


async def test_every_recipient_decrypts_and_sees_the_list_signature(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    recipients = [gpg_world.fingerprint(e) for e in MEMBERS]
    cipher = await list_key.ring.sign_encrypt(TEXT, recipients, list_key.fingerprint)

    for email in MEMBERS:
        result = await member_rings[email].decrypt(cipher)
        assert result.ok, email
        assert result.data == TEXT
        assert result.signed and result.valid
        assert result.signer == list_key.fingerprint

    outsider = await member_rings[DAVE].decrypt(cipher)
    assert not outsider.ok and outsider.data == b""


def _pubkey_packets(gpg_world: GpgWorld, cipher: bytes) -> list[str]:
    """The ``:pubkey enc packet:`` lines gpg lists, read with a home holding no secret key."""
    empty = gpg_world.make_home([])
    listing = subprocess.run(
        ["gpg", "--homedir", str(empty), "--batch", "--list-packets"],
        input=cipher,
        capture_output=True,
        check=False,
    )
    return [
        line
        for line in listing.stdout.decode().splitlines()
        if line.startswith(":pubkey enc packet:")
    ]


async def test_recipient_key_ids_are_hidden(list_key: ListKey, gpg_world: GpgWorld) -> None:
    recipients = [gpg_world.fingerprint(e) for e in MEMBERS]

    hidden = await list_key.ring.sign_encrypt(TEXT, recipients, list_key.fingerprint)
    shown = await list_key.ring.encrypt(TEXT, recipients)  # no --throw-keyids: the control

    hidden_packets = _pubkey_packets(gpg_world, hidden)
    assert len(hidden_packets) == len(MEMBERS)
    assert all("keyid 0000000000000000" in line for line in hidden_packets)
    shown_packets = _pubkey_packets(gpg_world, shown)
    assert len(shown_packets) == len(MEMBERS)
    assert not any("keyid 0000000000000000" in line for line in shown_packets)


async def test_sign_encrypt_to_more_recipients_than_status_lines_kept(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    # gpg notes each recipient it looks up (KEY_CONSIDERED): a group of 2100 gave more
    # status lines than a run keeps, and the last ones (END_ENCRYPTION) were dropped.
    # The same key named 2100 times makes gpg look it up 2100 times, as 2100 members would.
    recipients = [gpg_world.fingerprint(ALICE)] * 2100

    cipher = await list_key.ring.sign_encrypt(TEXT, recipients, list_key.fingerprint)

    result = await member_rings[ALICE].decrypt(cipher)
    assert result.ok and result.data == TEXT and result.signer == list_key.fingerprint


async def test_sign_encrypt_needs_recipients(list_key: ListKey) -> None:
    with pytest.raises(CryptoError):
        await list_key.ring.sign_encrypt(TEXT, [], list_key.fingerprint)


# -- decrypting what members send --------------------------------------------------------


async def test_decrypt_signed_by_a_known_key(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    cipher = await member_rings[ALICE].sign_encrypt(
        TEXT, [list_key.fingerprint], gpg_world.fingerprint(ALICE)
    )

    result = await list_key.ring.decrypt(cipher)

    assert result.ok and result.data == TEXT
    assert result.signed and result.valid
    assert result.signer == gpg_world.fingerprint(ALICE)


async def test_decrypt_unsigned(list_key: ListKey, member_rings: dict[str, Keyring]) -> None:
    cipher = await member_rings[BOB].encrypt(TEXT, [list_key.fingerprint])

    result = await list_key.ring.decrypt(cipher)

    assert result.ok and result.data == TEXT
    assert not result.signed and not result.valid
    assert result.signer is None


async def test_decrypt_signed_by_an_unknown_key(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    cipher = await member_rings[MALLORY].sign_encrypt(
        TEXT, [list_key.fingerprint], gpg_world.fingerprint(MALLORY)
    )

    result = await list_key.ring.decrypt(cipher)

    assert result.ok and result.data == TEXT
    assert result.signed  # there is a signature ...
    assert not result.valid  # ... that cannot be checked
    assert result.signer is None


async def test_decrypt_of_a_message_for_someone_else(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    cipher = await member_rings[BOB].encrypt(TEXT, [gpg_world.fingerprint(BOB)])

    result = await list_key.ring.decrypt(cipher)

    assert not result.ok and result.data == b""
    assert not result.valid and result.signer is None


# -- signatures --------------------------------------------------------------------------


async def test_verify_detached_on_exact_bytes(list_key: ListKey) -> None:
    signature = await list_key.ring.detach_sign(TEXT, list_key.fingerprint)

    good = await list_key.ring.verify_detached(TEXT, signature)

    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----")
    assert good.valid and good.signer == list_key.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: b[:5] + bytes([b[5] ^ 0x01]) + b[6:], id="one-bit"),
        pytest.param(lambda b: b.replace(b"\r\n", b"\n"), id="crlf-to-lf"),
        pytest.param(lambda b: b.replace(b"space \r\n", b"space\r\n"), id="trailing-space"),
        pytest.param(lambda b: b[:-1], id="truncated"),
    ],
)
async def test_verify_detached_fails_when_a_byte_changes(
    list_key: ListKey, change: Callable[[bytes], bytes]
) -> None:
    signature = await list_key.ring.detach_sign(TEXT, list_key.fingerprint)
    changed = change(TEXT)
    assert changed != TEXT

    result = await list_key.ring.verify_detached(changed, signature)

    assert not result.valid and result.signer is None


async def test_verify_detached_by_a_member(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    signature = await member_rings[CAROL].detach_sign(TEXT, gpg_world.fingerprint(CAROL))

    result = await list_key.ring.verify_detached(TEXT, signature)

    assert result.valid and result.signer == gpg_world.fingerprint(CAROL)


async def test_verify_clearsigned_inline(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    home = member_rings[ALICE].home
    signed = gpg_world.gpg(
        home,
        "--clearsign",
        "--local-user",
        gpg_world.fingerprint(ALICE),
        input=b"- starts with a dash\nplain line\n",
    ).stdout
    assert b"\n- - starts with a dash\n" in signed  # gpg dash-escaped it

    good = await list_key.ring.verify_clearsigned(signed)
    bad = await list_key.ring.verify_clearsigned(signed.replace(b"plain line", b"plain lime"))

    assert good.valid and good.signer == gpg_world.fingerprint(ALICE)
    assert good.data == b"- starts with a dash\nplain line\n"  # gpg's own reading
    assert not bad.valid and bad.data == b""


async def test_f1_clearsigned_text_is_what_gpg_verified_not_what_comes_first(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    genuine = await member_rings[ALICE].clearsign(b"genuine\n", gpg_world.fingerprint(ALICE))
    forged = b"-----BEGIN PGP SIGNED MESSAGE-----X\nHash: SHA256\n\nforged\n\n" + genuine

    result = await list_key.ring.verify_clearsigned(forged)

    # gpg skips the first block; whatever it verifies, only its own output is the content.
    assert b"forged" not in result.data


async def test_two_signatures_are_never_valid(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    home = gpg_world.make_home([ALICE, BOB])  # one sender holding two keys
    gpg_world.gpg(home, "--import", input=list_key.public.encode())
    alice, bob = gpg_world.fingerprint(ALICE), gpg_world.fingerprint(BOB)
    two = ["--local-user", alice, "--local-user", bob]

    clearsigned = gpg_world.gpg(home, "--clearsign", *two, input=TEXT).stdout
    encrypted = gpg_world.gpg(
        home,
        "--sign",
        "--encrypt",
        "--armor",
        "--trust-model",
        "always",
        *two,
        "--recipient",
        list_key.fingerprint,
        input=TEXT,
    ).stdout
    detached = gpg_world.gpg(home, "--detach-sign", "--armor", *two, input=TEXT).stdout

    for result in (
        await list_key.ring.verify_clearsigned(clearsigned),
        await list_key.ring.decrypt(encrypted),
        await list_key.ring.verify_detached(TEXT, detached),
    ):
        assert result.signatures == 2
        assert not result.valid and result.signer is None
        assert result.status == "more than one signature"


async def test_a_signed_message_is_not_a_detached_signature(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld
) -> None:
    # A complete signed message over other text, posing as the signature of TEXT.
    opaque = gpg_world.gpg(
        member_rings[ALICE].home,
        "--sign",
        "--armor",
        "--local-user",
        gpg_world.fingerprint(ALICE),
        input=b"other text",
    ).stdout

    result = await list_key.ring.verify_detached(TEXT, opaque)

    assert not result.valid and result.signer is None


async def test_decompression_bomb_is_refused() -> None:
    home = Path(tempfile.mkdtemp(prefix="gb"))
    ring = Keyring.create(home)
    try:
        fpr = await ring.generate("List", "list@bomb.test")
        # 5 MB of zeros compress to a few kilobytes of ciphertext.
        ciphertext = await ring.encrypt(b"\0" * 5_000_000, [fpr])
        assert len(ciphertext) < 100_000
        refused = await ring.decrypt(ciphertext, max_output=1_000_000)
        assert not refused.ok
        assert "larger than" in refused.status
        allowed = await ring.decrypt(ciphertext, max_output=10_000_000)
        assert allowed.ok and len(allowed.data) == 5_000_000
    finally:
        ring.close()
        shutil.rmtree(home, ignore_errors=True)


# -- gpg that misbehaves -----------------------------------------------------------------


def _with_armor_headers(armored: bytes, count: int) -> bytes:
    """``count`` unknown armor header lines with invalid UTF-8: gpg complains about each
    one on stderr, quoting the raw bytes."""
    first, rest = armored.split(b"\n", 1)
    bad = b"".join(b"\xff\xfe-%d: \xc3\x28\n" % i for i in range(count))
    return first + b"\n" + bad + rest


@pytest.mark.timeout(60)
@pytest.mark.parametrize("count", [1, 3000])
async def test_invalid_utf8_from_gpg_neither_breaks_nor_hangs_decryption(
    list_key: ListKey, member_rings: dict[str, Keyring], gpg_world: GpgWorld, count: int
) -> None:
    cipher = await member_rings[ALICE].sign_encrypt(
        TEXT, [list_key.fingerprint], gpg_world.fingerprint(ALICE)
    )

    result = await list_key.ring.decrypt(_with_armor_headers(cipher, count))

    assert result.ok and result.data == TEXT
    assert result.valid and result.signer == gpg_world.fingerprint(ALICE)


def _gpg_children() -> list[int]:
    """Process ids of gpg processes that this test process started."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == me and "(gpg)" in stat.read_text():
                found.append(int(stat.parent.name))
    return found


async def test_gpg_past_its_deadline_is_killed(
    list_key: ListKey, member_rings: dict[str, Keyring]
) -> None:
    cipher = await member_rings[BOB].encrypt(b"\0" * 2_000_000, [list_key.fingerprint])
    impatient = Keyring(list_key.ring.home, deadline=0.001)
    # Only this call's gpg counts: in a full run a gpg of an earlier test may still be here.
    before = set(_gpg_children())

    with pytest.raises(GpgTimeout, match="did not finish within"):
        await impatient.decrypt(cipher)

    assert set(_gpg_children()) - before == set()  # killed and reaped, not left running
    assert (await list_key.ring.decrypt(cipher)).ok  # the keyring is fine afterwards
