"""The D2 case rules (pure) and the nomination mail format: forgiving, with precise errors."""

from __future__ import annotations

import pytest

from secir_bot.cases import (
    CHALLENGE_PATTERN,
    CODE_PATTERN,
    Case,
    CaseState,
    Nominee,
    can_move,
    new_challenge,
    new_code,
    secret_hash,
)
from secir_bot.nomination import parse

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
FPR2 = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"


def test_states_only_move_forward() -> None:
    assert can_move(CaseState.INVITED, CaseState.NOMINATED)
    assert can_move(CaseState.NOMINATED, CaseState.READY)
    assert can_move(CaseState.READY, CaseState.APPROVED)
    for end in (CaseState.REJECTED, CaseState.EXPIRED):
        assert all(
            can_move(s, end) for s in (CaseState.INVITED, CaseState.NOMINATED, CaseState.READY)
        )
    assert not can_move(CaseState.INVITED, CaseState.APPROVED)
    assert not can_move(CaseState.NOMINATED, CaseState.APPROVED)
    assert not any(can_move(CaseState.APPROVED, s) for s in CaseState)
    assert not any(can_move(CaseState.EXPIRED, s) for s in CaseState)


def test_codes_are_random_recognisable_and_hashed() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(CODE_PATTERN.fullmatch(c) for c in codes)
    challenge = new_challenge()
    assert CHALLENGE_PATTERN.fullmatch(challenge)
    assert secret_hash(challenge) == secret_hash(f"  {challenge.lower()} ")
    assert challenge not in secret_hash(challenge)


def _nominee(
    position: int, proven: bool, matrix: str | None = None, joined: bool = False
) -> Nominee:
    return Nominee(
        id=position,
        position=position,
        name=f"N{position}",
        email=f"n{position}@x.nl",
        phone=None,
        fingerprint=FPR,
        key="",
        matrix_id=matrix,
        timezone=None,
        languages=(),
        key_proven_at=1.0 if proven else None,
        matrix_joined_at=1.0 if joined else None,
    )


def _case(state: CaseState, *nominees: Nominee) -> Case:
    return Case(
        1, "nl", state, "admin@x.nl", "SIDN", "whois", None, None, "@a:x", 0, 9, nominees=nominees
    )


def test_what_a_case_waits_for() -> None:
    assert _case(CaseState.INVITED).waiting_for() == (
        "the nomination from the administrative contact admin@x.nl"
    )
    case = _case(CaseState.NOMINATED, _nominee(1, True), _nominee(2, False, "@n2:x.nl"))
    assert case.waiting_for() == (
        "N2 <n2@x.nl>: the signed answer to their key challenge, @n2:x.nl to accept the bot's "
        "invitation"
    )
    assert case.state_after_proofs() is CaseState.NOMINATED
    done = _case(CaseState.NOMINATED, _nominee(1, True), _nominee(2, True, "@n2:x.nl", True))
    assert done.state_after_proofs() is CaseState.READY
    assert _case(CaseState.READY).waiting_for() == "an admin's !approve (or !reject)"


GOOD = f"""Dear SECIR admins, here are our contacts.

Code: abcde-fghjk-mnpqr-stvwx

Name: Alice Jansen
E-mail: Alice@Registry.nl
Phone: +31 70 123 4567
Fingerprint: {" ".join(FPR[i : i + 4] for i in range(0, 40, 4))}
Matrix ID: @alice:matrix.registry.nl
TZ: Europe/Amsterdam
Languages: nl, en

nominee 2
name: Bob Silva
mail: bob@registry.nl
-----BEGIN PGP PUBLIC KEY BLOCK-----
mQINBF...
-----END PGP PUBLIC KEY BLOCK-----
language: pt-BR

-- 
Registry admin
name: not a nominee
"""


def test_a_good_nomination() -> None:
    nomination = parse(GOOD)
    assert nomination.problems == ()
    assert nomination.code == "ABCDE-FGHJK-MNPQR-STVWX"
    alice, bob = nomination.nominees
    assert (alice.position, alice.name, alice.email, alice.phone) == (
        1,
        "Alice Jansen",
        "alice@registry.nl",
        "+31701234567",
    )
    assert (alice.fingerprint, alice.matrix_id, alice.timezone, alice.languages) == (
        FPR,
        "@alice:matrix.registry.nl",
        "Europe/Amsterdam",
        ("nl", "en"),
    )
    assert (bob.position, bob.email, bob.fingerprint, bob.languages) == (
        2,
        "bob@registry.nl",
        None,
        ("pt-BR",),
    )
    assert bob.key is not None and bob.key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


ONE = f"code: X\nname: A\nemail: a@x.nl\nphone: +31701234567\nfpr: {FPR}\n"
FOUR = "".join(f"name: N{i}\nemail: n{i}@x.nl\nphone: +31701234567\nfpr: {FPR}\n" for i in range(4))
CODES = "code: ABCDE-FGHJK-MNPQR-STVWX\ncode: BBCDE-FGHJK-MNPQR-STVWX\n"
KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----\n"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (ONE.replace("code: X\n", ""), "the code from the invitation is missing"),
        ("code: X\n", "no nominee found"),
        (ONE.replace("phone: +31701234567\n", ""), "nominee 1: the primary contact needs a phone"),
        (ONE.replace("+31701234567", "070 123"), "nominee 1, phone: give the phone number with"),
        (ONE.replace("email: a@x.nl\n", ""), "nominee 1: the email address is missing"),
        (ONE.replace(f"fpr: {FPR}\n", ""), "nominee 1: give the key's fingerprint or paste"),
        (ONE.replace("a@x.nl", "a@x"), "nominee 1, email: not an email address"),
        (ONE + "matrix: alice", "nominee 1, matrix: not a Matrix user id"),
        (ONE + "tz: Mars/Base", "nominee 1, timezone: not an IANA time zone"),
        (ONE + "languages: klingonese", "nominee 1, languages: not a"),
        (ONE.replace(FPR, "ABCD"), "nominee 1, fingerprint: a v4 fingerprint has 40 hex digits"),
        (ONE + "shoe size: 44", "nominee 1: unknown field 'shoe size'"),
        (ONE + "e-mail: b@x.nl", "nominee 1, email: given twice"),
        ("code: X\n" + FOUR, "4 nominees given; at most 3 per ccTLD"),
        (ONE + f"name: B\nemail: a@x.nl\nfpr: {FPR2}", "the same email address is given for two"),
        (CODES + ONE.replace("code: X\n", ""), "more than one code given"),
        ("code: X\n" + KEY + "name: A", "a public key comes before any nominee"),
        (ONE + KEY + KEY, "nominee 1: two keys given"),
    ],
)
def test_each_problem_is_named(body: str, problem: str) -> None:
    nomination = parse(body)
    assert any(problem in p for p in nomination.problems), nomination.problems


def test_all_problems_at_once() -> None:
    nomination = parse("code: X\nname: A\nemail: nope\nphone: 123\nname: B\n")
    assert len(nomination.problems) >= 4
    assert "nominee 1, email: not an email address: 'nope'" in nomination.problems
    assert "nominee 2: the email address is missing" in nomination.problems


def test_quoted_text_and_signature_are_ignored() -> None:
    body = "code: ABCDE-FGHJK-MNPQR-STVWX\nname: A\nemail: a@x.nl\nphone: +31701234567\n"
    body += f"fpr: {FPR}\n> name: quoted\n> email: q@x.nl\n"
    nomination = parse(body)
    assert nomination.problems == ()
    assert len(nomination.nominees) == 1
