"""A relayed mail fits in one encrypted Matrix event (issue 10 and the 64 KiB limit).

The real homeserver's verdict on both sizes is in ``integration/test_fidelity_real.py``.
"""

from __future__ import annotations

from secir_bot.fidelity.fit import CIPHERTEXT_BUDGET, encrypted_size, fit, fit_matrix_text
from secir_bot.fidelity.fromtext import text_to_matrix

RUSSIAN = "".join(f"Строка {i}: атака на резолверы .рф продолжается.\n" for i in range(400))


def test_short_text_is_not_cut() -> None:
    out, cut = fit_matrix_text("Short text.", text_to_matrix)
    assert not cut and out.body == "Short text."


def test_issue10_long_non_ascii_mail_is_cut_to_fit() -> None:
    """19,490 Cyrillic characters (the relay today cuts at 16,000): the event would be four
    times the limit; about 4,700 characters fit, in body and formatted_body."""
    whole = text_to_matrix(RUSSIAN).content()
    assert encrypted_size(whole) > 2 * CIPHERTEXT_BUDGET
    out, cut = fit_matrix_text(RUSSIAN, text_to_matrix)
    assert cut
    assert encrypted_size(text_to_matrix(out.body).content()) <= CIPHERTEXT_BUDGET
    assert out.body.endswith("[… cut here: the whole text went out by mail]")
    kept = out.body.split("\n\n[… cut here")[0]
    assert RUSSIAN.startswith(kept) and kept.endswith("продолжается.")  # cut at a line end
    assert len(kept) > 4_000  # about 16 bytes of event per Cyrillic character


def test_fit_calls_render_a_logarithmic_number_of_times() -> None:
    calls = []

    def render(part: str, cut: bool) -> dict[str, str]:
        calls.append(len(part))
        return {"body": part + ("!" if cut else "")}

    content, cut = fit("ж" * 100_000, render, budget=10_000)
    assert cut and encrypted_size(content) <= 10_000
    assert len(calls) < 25
