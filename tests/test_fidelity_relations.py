"""Mentions, edits, corrections, redactions and reactions (issue 10): the pure helpers.

Event shapes are those of the spec's examples (Client-Server API: "Event replacements",
"User and room mentions", "Redactions", "Event annotations").
"""

from __future__ import annotations

import pytest

from secir_bot.fidelity.reasons import Refusal
from secir_bot.fidelity.relations import (
    Correction,
    Edit,
    Reaction,
    correction_problem,
    correction_subject,
    correction_text,
    edit_content,
    edit_problem,
    mentioned_user,
    mentions,
    parse_correction,
    parse_edit,
    parse_reaction,
    redacted_event,
    retraction_subject,
    retraction_text,
    without_correction_tag,
)

ROOM = "!incident:test.local"
ALICE = "@alice:test.local"


def event(content: dict[str, object], **top: object) -> dict[str, object]:
    return {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": ALICE,
        "event_id": "$e",
        "content": content,
        **top,
    }


# -- mentions ------------------------------------------------------------------------------


def test_issue10_bot_mentions_nobody_unless_it_means_to() -> None:
    assert mentions() == {}
    assert mentions(["@b:test.local", "@a:test.local", "@a:test.local", "not-an-id"]) == {
        "user_ids": ["@a:test.local", "@b:test.local"]
    }
    assert "room" not in mentions(["@room:test.local"])


@pytest.mark.parametrize(
    ("href", "user"),
    [
        ("https://matrix.to/#/@alice:test.local", ALICE),
        ("https://matrix.to/#/%40alice%3Atest.local?via=test.local", ALICE),
        ("https://MATRIX.TO/#/@alice:test.local", ALICE),
        ("matrix:u/alice:test.local?action=chat", ALICE),
        ("https://matrix.to/#/#room:test.local", None),
        ("https://matrix.to/#/!room:test.local/$event", None),
        ("https://evil.test/#/@alice:test.local", None),
        ("http://matrix.to/#/@alice:test.local", None),
        ("https://matrix.to/#/@alice", None),
        ("::not a url", None),
    ],
)
def test_mentioned_user(href: str, user: str | None) -> None:
    assert mentioned_user(href) == user


# -- edits ---------------------------------------------------------------------------------

EDIT = {
    "msgtype": "m.text",
    "body": "* Hello! My name is bar",
    "m.new_content": {"msgtype": "m.text", "body": "Hello! My name is bar"},
    "m.relates_to": {"rel_type": "m.replace", "event_id": "$original"},
}


def test_parse_edit() -> None:
    assert parse_edit(EDIT) == Edit(
        "$original", {"msgtype": "m.text", "body": "Hello! My name is bar"}
    )
    # A relation inside m.new_content is ignored (spec, "Applying m.new_content").
    nested = {**EDIT, "m.new_content": {**EDIT["m.new_content"], "m.relates_to": {"x": 1}}}  # type: ignore[dict-item]
    edit = parse_edit(nested)
    assert edit is not None and "m.relates_to" not in edit.new_content


@pytest.mark.parametrize(
    "content",
    [
        {"msgtype": "m.text", "body": "no relation"},
        {**EDIT, "m.relates_to": {"rel_type": "m.thread", "event_id": "$o"}},
        {**EDIT, "m.relates_to": {"rel_type": "m.replace"}},
        {**EDIT, "m.relates_to": {"rel_type": "m.replace", "event_id": "no-dollar"}},
        {**EDIT, "m.new_content": "text"},
        {**EDIT, "m.new_content": {"msgtype": "m.text"}},
        {**EDIT, "m.relates_to": ["m.replace"]},
    ],
)
def test_not_an_edit(content: dict[str, object]) -> None:
    assert parse_edit(content) is None


def test_edit_validity_rules() -> None:
    original = event({"msgtype": "m.text", "body": "Hello"})
    edit = event(EDIT, event_id="$edit")
    assert edit_problem(original, edit) is None
    assert edit_problem(original, {**edit, "sender": "@mallory:test.local"}) == "edit-not-author"
    assert edit_problem(original, {**edit, "room_id": "!other:test.local"}) == "edit-other-room"
    assert edit_problem(original, {**edit, "type": "m.sticker"}) == "edit-other-type"
    assert edit_problem({**original, "state_key": ""}, edit) == "edit-other-type"
    assert edit_problem(event(EDIT), edit) == "edit-of-edit"
    assert Refusal("edit-not-author").text() == "only the author of a message can correct it"


def test_edit_content_for_a_relayed_mail() -> None:
    new = {
        "msgtype": "m.text",
        "body": "corrected",
        "format": "org.matrix.custom.html",
        "formatted_body": "<p>corrected</p>",
        "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
    }
    content = edit_content("$relayed", new)
    assert content == {
        "msgtype": "m.text",
        "body": "* corrected",
        "format": "org.matrix.custom.html",
        "formatted_body": "* <p>corrected</p>",
        "m.new_content": {
            "msgtype": "m.text",
            "body": "corrected",
            "format": "org.matrix.custom.html",
            "formatted_body": "<p>corrected</p>",
            "m.mentions": {},
        },
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$relayed"},
        "m.mentions": {},
    }
    # The edit round-trips through the parser.
    assert parse_edit(content) == Edit("$relayed", content["m.new_content"])


def test_edit_content_keeps_final_mentions_inside_and_renotifies_only_on_request() -> None:
    new = {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [ALICE]}}
    assert edit_content("$e", new)["m.mentions"] == {}
    assert edit_content("$e", new)["m.new_content"]["m.mentions"] == {"user_ids": [ALICE]}
    assert edit_content("$e", new, notify=[ALICE])["m.mentions"] == {"user_ids": [ALICE]}


# -- corrections by mail ---------------------------------------------------------------------


def test_correction_by_supersedes_header() -> None:
    found = parse_correction("Re: outage", "<old@test.example> (first try)", ["<p@x>"])
    assert found == Correction("<old@test.example>", "supersedes")


def test_correction_by_subject_tag_corrects_the_parent() -> None:
    assert parse_correction("[Correction] Re: outage", None, ["<parent@x>"]) == Correction(
        "<parent@x>", "subject"
    )
    assert parse_correction("Re: outage [corrected]", "", ["<parent@x>"]) == Correction(
        "<parent@x>", "subject"
    )


@pytest.mark.parametrize(
    ("subject", "supersedes", "replies"),
    [
        ("[Correction] no parent", None, []),
        ("Re: a correction of sorts", None, ["<p@x>"]),
        ("Re: outage", "no id here", ["<p@x>"]),
    ],
)
def test_not_a_correction(subject: str, supersedes: str | None, replies: list[str]) -> None:
    assert parse_correction(subject, supersedes, replies) is None


def test_only_the_author_may_correct() -> None:
    assert correction_problem(7, 7) is None
    assert correction_problem(7, 8) == "correction-not-author"


def test_correction_and_retraction_texts() -> None:
    assert without_correction_tag("[correction]  Re:  outage") == "Re: outage"
    assert correction_subject("[Correction] Re: outage") == "[corrected] Re: outage"
    text = correction_text("Alice Jansen (.nl)", "The new text.")
    assert text.startswith("Alice Jansen (.nl) corrected this message in the Matrix room.")
    assert text.endswith("\n\nThe new text.")
    assert retraction_subject("Re: outage") == "[withdrawn] Re: outage"
    notice = retraction_text("Alice Jansen (.nl)")
    assert "withdrew this message" in notice
    assert "Mail cannot be unsent" in notice


# -- redactions and reactions ----------------------------------------------------------------


def test_redacted_event_in_both_room_versions() -> None:
    v11 = {"type": "m.room.redaction", "content": {"redacts": "$gone"}, "sender": ALICE}
    v10 = {"type": "m.room.redaction", "content": {"reason": "oops"}, "redacts": "$gone"}
    assert redacted_event(v11) == "$gone"
    assert redacted_event(v10) == "$gone"
    assert redacted_event({"type": "m.room.message", "redacts": "$x"}) is None
    assert redacted_event({"type": "m.room.redaction", "content": {"redacts": 5}}) is None


def test_parse_reaction() -> None:
    reaction = {
        "type": "m.reaction",
        "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$p", "key": "✅"}},
    }
    assert parse_reaction(reaction) == Reaction("$p", "✅")
    assert parse_reaction({**reaction, "type": "m.room.message"}) is None
    bad = {"type": "m.reaction", "content": {"m.relates_to": {"rel_type": "m.annotation"}}}
    assert parse_reaction(bad) is None
