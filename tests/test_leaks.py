"""The session's secret watch itself: it sees a secret in any spelling, and in any logger.

Without this, a watch that silently saw nothing would make every test pass.
"""

from __future__ import annotations

import logging

import leaks
import pytest

from secir_bot import redact


@pytest.fixture
def watch() -> leaks.LeakWatch:
    """The session's watch, with whatever this test makes it record taken back afterwards."""
    before = len(leaks.WATCH.leaks)
    yield leaks.WATCH
    del leaks.WATCH.leaks[before:]


@pytest.mark.parametrize(
    "shown",
    [
        lambda s: s,
        lambda s: 'LOGIN user "' + s.replace("\\", "\\\\").replace('"', '\\"') + '"',
        lambda s: repr(s.encode()),
    ],
)
def test_the_watch_sees_a_secret_as_libraries_print_it(
    watch: leaks.LeakWatch, shown: object
) -> None:
    secret = 'watch"me\\now-4711'
    leaks.secret(secret)
    before = len(watch.leaks)
    logging.getLogger("some.library").warning("sending %s", shown(secret))  # type: ignore[operator]
    assert len(watch.leaks) == before + 1
    assert secret not in watch.leaks[-1]  # the report names the leak, never the secret


def test_the_watch_sees_secret_keys_and_tokens_whatever_their_value(
    watch: leaks.LeakWatch,
) -> None:
    before = len(watch.leaks)
    logging.getLogger("x").error("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQ...")
    logging.getLogger("x").info("token syt_Ym90_AbCdEfGhIjKlMnOp_0xyz12")
    assert len(watch.leaks) == before + 2


def test_the_bots_filter_masks_a_registered_secret_before_any_handler_sees_it(
    watch: leaks.LeakWatch,
) -> None:
    secret = redact.secret('bot"pass\\word-4712')
    leaks.secret(secret)
    redact.install()
    before = len(watch.leaks)
    quoted = secret.replace("\\", "\\\\").replace('"', '\\"')
    logging.getLogger("aioimaplib.aioimaplib").debug("Sending : %s", f'LOGIN u "{quoted}"')
    assert len(watch.leaks) == before
