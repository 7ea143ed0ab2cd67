"""Tests for secir_bot.members: who may join, every refusal named at once, and import files.

Real gpg (the session's ``gpg_world`` keys) and a real Store; the list keyring lives in a
short temp home so gpg-agent's socket path stays within its limit.
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from servers import GpgWorld

from secir_bot.crypto import Keyring
from secir_bot.errors import MemberError
from secir_bot.members import MemberRequest, add_member, parse_channels, read_import_file
from secir_bot.model import Channel
from secir_bot.store import Store

ALICE, BOB, CAROL = "alice@test.example", "bob@test.example", "carol@test.example"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store", create=True)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def keyring() -> Iterator[Keyring]:
    home = Path(tempfile.mkdtemp(prefix="g"))
    ring = Keyring.create(home)
    try:
        yield ring
    finally:
        ring.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def request_for(gpg_world: GpgWorld) -> Callable[..., MemberRequest]:
    """A good request by ``owner`` with their own key; keywords change single fields."""

    def make(owner: str = ALICE, **changes: object) -> MemberRequest:
        req = MemberRequest(
            tld=".nl", name="Alice Jansen", email=owner, key=gpg_world.export_public(owner)
        )
        return replace(req, **changes)  # type: ignore[arg-type]

    return make


async def _refused(store: Store, keyring: Keyring, req: MemberRequest) -> str:
    """Add ``req``, expect a refusal, and check that nothing was stored or imported."""
    before = store.members.all()
    with pytest.raises(MemberError) as info:
        await add_member(store, keyring, req)
    assert store.members.all() == before
    return str(info.value)


# -- accepted ----------------------------------------------------------------------------


async def test_good_member_with_idn_cctld(
    store: Store, keyring: Keyring, gpg_world: GpgWorld, request_for: Callable[..., MemberRequest]
) -> None:
    req = request_for(
        ALICE,
        tld="рф",
        name="  Алиса Янсен ",
        email="  Alice@Test.Example ",
        matrix_id="@alice:test.local",
    )

    member = await add_member(store, keyring, req)

    assert member.tld == "xn--p1ai"
    assert member.tld_display == ".рф"
    assert member.label == "Алиса Янсен (.рф)"
    assert member.email == ALICE
    assert member.fingerprint == gpg_world.fingerprint(ALICE)
    assert member.channels == frozenset({Channel.EMAIL, Channel.MATRIX})
    assert store.members.by_email(ALICE) == member
    key = await keyring.key(member.fingerprint)
    assert key is not None and not key.has_secret


async def test_a_label_input_is_shown_as_u_label(
    store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]
) -> None:
    member = await add_member(store, keyring, request_for(BOB, tld="xn--p1ai"))

    assert (member.tld, member.tld_display) == ("xn--p1ai", ".рф")


async def test_ascii_cctld_and_email_only(
    store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]
) -> None:
    member = await add_member(store, keyring, request_for(BOB, tld="NL", rank=2))

    assert (member.tld, member.tld_display, member.rank) == ("nl", ".nl", 2)
    assert member.channels == frozenset({Channel.EMAIL})
    assert member.matrix_id is None


def test_parse_channels() -> None:
    assert parse_channels("", None) == {Channel.EMAIL}
    assert parse_channels(" ", "@a:b") == {Channel.EMAIL, Channel.MATRIX}
    assert parse_channels(" Matrix , email", None) == {Channel.EMAIL, Channel.MATRIX}
    with pytest.raises(MemberError, match="'sms'"):
        parse_channels("email,sms", None)


# -- refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "changes", "expected"),
    [
        (ALICE, {"tld": ".com"}, ".com is a generic TLD, not a country-code TLD"),
        (ALICE, {"tld": "xx"}, ".xx is not a delegated country-code TLD"),
        (ALICE, {"email": "alice.test.example"}, "not an email address: 'alice.test.example'"),
        ("expired@test.example", {}, "the key has expired"),
        ("revoked@test.example", {}, "the key is revoked"),
        ("signonly@test.example", {}, "the key has no usable encryption subkey"),
        (ALICE, {"email": BOB}, f"no user id of the key carries {BOB}"),
        (ALICE, {"channels": "matrix"}, "the matrix channel needs a Matrix id"),
        (ALICE, {"channels": "email,pager"}, "unknown channel 'pager'"),
        (ALICE, {"matrix_id": "alice:test.local"}, "not a Matrix user id"),
        (ALICE, {"name": "   "}, "the name is empty"),
        (ALICE, {"name": "Alice\r\nBcc: x@evil.test"}, "the name holds control characters"),
        (ALICE, {"email": "ali\x00ce@test.example"}, "contains a control character (U+0000)"),
        (ALICE, {"email": "ali\x1bce@test.example"}, "contains a control character (U+001B)"),
        (ALICE, {"matrix_id": "@alice:test.local\n"}, "contains a control character (U+000A)"),
        (ALICE, {"rank": 4}, "rank must be 1, 2 or 3"),
        (ALICE, {"key": "not a key at all"}, "key: no OpenPGP key found"),
    ],
)
async def test_refusals(
    store: Store,
    keyring: Keyring,
    request_for: Callable[..., MemberRequest],
    owner: str,
    changes: dict[str, object],
    expected: str,
) -> None:
    message = await _refused(store, keyring, request_for(owner, **changes))

    assert expected in message
    assert await keyring.keys() == []  # nothing imported before every check passed


async def test_two_keys_are_refused(
    store: Store, keyring: Keyring, gpg_world: GpgWorld, request_for: Callable[..., MemberRequest]
) -> None:
    two = gpg_world.export_public(ALICE) + gpg_world.export_public(BOB)

    message = await _refused(store, keyring, request_for(ALICE, key=two))

    assert "give exactly one public key (found 2)" in message


async def test_secret_key_is_refused(
    store: Store, keyring: Keyring, gpg_world: GpgWorld, request_for: Callable[..., MemberRequest]
) -> None:
    message = await _refused(store, keyring, request_for(ALICE, key=gpg_world.export_secret(ALICE)))

    assert "SECRET key" in message
    assert await keyring.keys() == []


async def test_all_problems_in_one_message(
    store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]
) -> None:
    req = request_for(
        "expired@test.example",
        tld=".com",
        email="expired at test.example",
        channels="matrix,pager",
        matrix_id=None,
    )

    message = await _refused(store, keyring, req)

    for part in (
        ".com is a generic TLD, not a country-code TLD",  # each of the five problems
        "not an email address: 'expired at test.example'",
        "unknown channel 'pager'",
        "the key has expired",
        "no user id of the key carries expired at test.example",
    ):
        assert part in message


async def test_matrix_channel_without_id_is_named_with_other_problems(
    store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]
) -> None:
    message = await _refused(
        store, keyring, request_for("revoked@test.example", channels="matrix", tld="com")
    )

    assert "the matrix channel needs a Matrix id" in message
    assert "the key is revoked" in message
    assert "not a country-code TLD" in message


# -- duplicates --------------------------------------------------------------------------


@pytest.fixture
async def alice(store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]) -> None:
    await add_member(store, keyring, request_for(ALICE, matrix_id="@alice:test.local"))


@pytest.mark.usefixtures("alice")
async def test_duplicate_email_is_refused(
    store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]
) -> None:
    message = await _refused(store, keyring, request_for(BOB, email="ALICE@test.example"))

    assert f"{ALICE} is already a member" in message


@pytest.mark.usefixtures("alice")
async def test_duplicate_key_is_refused(
    store: Store, keyring: Keyring, gpg_world: GpgWorld, request_for: Callable[..., MemberRequest]
) -> None:
    message = await _refused(store, keyring, request_for(ALICE, email="alice2@test.example"))

    assert f"key {gpg_world.fingerprint(ALICE)} is already registered for another member" in message


@pytest.mark.usefixtures("alice")
async def test_duplicate_matrix_id_is_refused(
    store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]
) -> None:
    message = await _refused(store, keyring, request_for(BOB, matrix_id="@alice:test.local"))

    assert message == "@alice:test.local is already a member"


@pytest.mark.usefixtures("alice")
async def test_a_second_distinct_member_is_fine(
    store: Store, keyring: Keyring, request_for: Callable[..., MemberRequest]
) -> None:
    await add_member(store, keyring, request_for(BOB, matrix_id="@bob:test.local"))

    assert [m.email for m in store.members.all()] == [ALICE, BOB]


# -- import files ------------------------------------------------------------------------


@pytest.fixture
def import_dir(tmp_path: Path, gpg_world: GpgWorld, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with key files, and the working directory somewhere else."""
    directory = tmp_path / "roster"
    (directory / "keys").mkdir(parents=True)
    for email in (ALICE, CAROL):
        name = email.split("@")[0]
        (directory / "keys" / f"{name}.asc").write_text(
            gpg_world.export_public(email), encoding="utf-8"
        )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return directory


def test_read_toml_import_file(import_dir: Path, gpg_world: GpgWorld) -> None:
    path = import_dir / "members.toml"
    path.write_text(
        "[[member]]\n"
        'tld = ".nl"\nname = "Alice Jansen"\nemail = "alice@test.example"\n'
        'key = "keys/alice.asc"\nmatrix_id = "@alice:test.local"\n'
        'channels = "matrix,email"\nrank = 2\n\n'
        "[[member]]\n"
        'tld = "рф"\nname = "Bob Silva"\nemail = "bob@test.example"\n'
        f"key = '''\n{gpg_world.export_public(BOB)}'''\n",
        encoding="utf-8",
    )

    alice, bob = read_import_file(path)

    assert alice == MemberRequest(
        tld=".nl",
        name="Alice Jansen",
        email=ALICE,
        key=gpg_world.export_public(ALICE),
        matrix_id="@alice:test.local",
        channels="matrix,email",
        rank=2,
    )
    assert bob.tld == "рф" and bob.matrix_id is None and bob.rank == 1 and bob.channels == ""
    assert bob.key.strip() == gpg_world.export_public(BOB).strip()


def test_read_csv_import_file(import_dir: Path, gpg_world: GpgWorld) -> None:
    path = import_dir / "members.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tld", "name", "email", "key", "matrix_id", "channels", "rank"])
        writer.writerow([".jp", "Carol Tanaka", CAROL, "keys/carol.asc", "", "", ""])
        writer.writerow(
            ["рф", "Bob Silva", BOB, gpg_world.export_public(BOB), "@bob:test.local", "matrix", "3"]
        )

    carol, bob = read_import_file(path)

    assert carol == MemberRequest(
        tld=".jp", name="Carol Tanaka", email=CAROL, key=gpg_world.export_public(CAROL)
    )
    assert (bob.matrix_id, bob.channels, bob.rank) == ("@bob:test.local", "matrix", 3)
    assert bob.key == gpg_world.export_public(BOB)


async def test_imported_requests_can_be_added(
    import_dir: Path, store: Store, keyring: Keyring
) -> None:
    path = import_dir / "members.csv"
    path.write_text(
        "tld,name,email,key\n.jp,Carol Tanaka,carol@test.example,keys/carol.asc\n"
        "рф,Alice Jansen,alice@test.example,keys/alice.asc\n",
        encoding="utf-8",
    )

    for req in read_import_file(path):
        await add_member(store, keyring, req)

    assert sorted((m.tld_display, m.email) for m in store.members.all()) == [
        (".jp", CAROL),
        (".рф", ALICE),
    ]


def test_import_entry_with_missing_fields(import_dir: Path) -> None:
    path = import_dir / "members.csv"
    path.write_text(
        "tld,name,email,key\n.jp,Carol,carol@test.example,keys/carol.asc\n.nl,Someone,,\n",
        encoding="utf-8",
    )

    with pytest.raises(MemberError, match=re.escape("members.csv entry 2: missing email, key")):
        read_import_file(path)


def test_import_key_file_must_exist(import_dir: Path) -> None:
    path = import_dir / "members.toml"
    path.write_text(
        '[[member]]\ntld = "nl"\nname = "A"\nemail = "a@test.example"\nkey = "keys/nobody.asc"\n',
        encoding="utf-8",
    )

    with pytest.raises(MemberError, match=re.escape("cannot read key file keys/nobody.asc")):
        read_import_file(path)


def test_import_key_path_is_not_relative_to_the_working_directory(
    import_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(import_dir / "keys" / "alice.asc", tmp_path / "elsewhere" / "cwd.asc")
    path = import_dir / "members.toml"
    path.write_text(
        '[[member]]\ntld = "nl"\nname = "A"\nemail = "alice@test.example"\nkey = "cwd.asc"\n',
        encoding="utf-8",
    )

    with pytest.raises(MemberError, match=re.escape("cannot read key file cwd.asc")):
        read_import_file(path)


def test_import_needs_toml_or_csv(import_dir: Path) -> None:
    path = import_dir / "members.json"
    path.write_text("[]", encoding="utf-8")

    with pytest.raises(MemberError, match=re.escape("use a .toml or .csv file")):
        read_import_file(path)


def test_import_bad_rank_names_the_entry(import_dir: Path) -> None:
    path = import_dir / "members.csv"
    path.write_text(
        "tld,name,email,key,rank\n.jp,Carol,carol@test.example,keys/carol.asc,high\n",
        encoding="utf-8",
    )

    with pytest.raises(MemberError, match=re.escape("members.csv entry 1")):
        read_import_file(path)


def test_import_invalid_toml_is_a_member_error(import_dir: Path) -> None:
    path = import_dir / "members.toml"
    path.write_text("[[member]\ntld = 'nl'\n", encoding="utf-8")

    with pytest.raises(MemberError, match=re.escape("members.toml")):
        read_import_file(path)
