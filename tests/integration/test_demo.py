"""``make demo`` as a new user runs it: the real command, in a subprocess, on real servers.

The first test runs ``secir-bot sandbox --once`` and checks that both legs of the round trip
were shown and succeeded. The second runs the staying-up mode, checks the connection details
and the key files it promises, then stops it with Ctrl-C (SIGINT) and checks that it cleaned
up: exit code 0, state directory gone, servers no longer listening.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "secir_bot", "sandbox"]
RUN_TIMEOUT = 120.0
ALICE_POST = "DDoS on .nl name servers since 13:05 UTC, 40 Gbit/s"
BOB_REPLY = "Same pattern against .br since 13:20 UTC; we are sharing the source prefixes."


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _lines_after(lines: list[str], marker: str) -> list[str]:
    """The lines from the first one containing ``marker`` on."""
    for i, line in enumerate(lines):
        if marker in line:
            return lines[i:]
    raise AssertionError(f"no line with {marker!r} in the output:\n" + "\n".join(lines))


def _find(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text``; fails the test if it is not there."""
    found = re.search(pattern, text)
    assert found is not None, f"no {pattern!r} in the output:\n{text}"
    return found[1]


def _listening(url_or_port: str | int) -> bool:
    port = int(str(url_or_port).rsplit(":", 1)[-1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_demo_once_shows_both_legs_of_the_round_trip() -> None:
    result = subprocess.run(
        [*COMMAND, "--once"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    out = result.stdout
    context = f"stdout:\n{out}\nstderr (end):\n{result.stderr[-4000:]}"
    assert result.returncode == 0, context
    lines = out.splitlines()

    leg1 = _lines_after(lines, "Leg 1: room -> mail")
    leg1 = leg1[: leg1.index(next(ln for ln in leg1 if "Leg 2:" in ln))]
    assert f'    "{ALICE_POST}"' in leg1, context
    assert any("as m.room.encrypted" in ln for ln in leg1), context
    from_line = next(ln for ln in leg1 if ln.strip().startswith("From:"))
    assert re.search(r'"Alice Jansen \(\.nl\) via SECIR" <list-[0-9a-f]+@secir\.test>', from_line)
    subject_line = next(ln for ln in leg1 if ln.strip().startswith("Subject:"))
    assert "[SECIR] encrypted message" in subject_line and "DDoS" not in subject_line, context
    assert any("multipart/encrypted" in ln for ln in leg1), context
    assert "    Decrypted with Bob's own key; good signature by the list key." in leg1, context
    assert f"    Protected subject: {ALICE_POST}" in leg1, context
    assert f"    Text:              {ALICE_POST}" in leg1, context
    assert any(re.fullmatch(r"  room -> mail: OK in \d+\.\d\d s", ln) for ln in leg1), context

    leg2 = _lines_after(lines, "Leg 2: mail -> room")
    assert f"    Subject (protected): Re: {ALICE_POST}" in leg2, context
    body = next(ln for ln in leg2 if ln.strip().startswith("body:"))
    assert f"Bob Silva (.br) by email: Re: {ALICE_POST}" in body, context
    assert any(ln.strip() == BOB_REPLY for ln in leg2), context
    assert "    on the wire: m.room.encrypted; decrypted on Carol's device: yes" in leg2, context
    root = _find(r"Synapse stores event (\S+) as", out)
    assert f"    thread:   m.thread on {root}, in the thread of Alice's post" in leg2, context
    assert any(re.fullmatch(r"  mail -> room: OK in \d+\.\d\d s", ln) for ln in leg2), context
    assert re.search(
        r"Round trip done: room -> mail \d+\.\d\d s, mail -> room \d+\.\d\d s\.", out
    ), context

    state = _find(r"State directory: (\S+)", out)
    assert f"Stopped and removed {state}" in out, context
    assert not Path(state).exists()
    assert "FAILED" not in out


def _read_lines(stream: queue.Queue[str | None], proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        stream.put(line.rstrip("\n"))
    stream.put(None)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_demo_stays_up_with_connection_details_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    lines: list[str] = []
    stream: queue.Queue[str | None] = queue.Queue()
    with (
        open(tmp_path / "stderr.log", "w") as err,
        subprocess.Popen(
            COMMAND, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=err, text=True
        ) as proc,
    ):
        reader = threading.Thread(target=_read_lines, args=(stream, proc), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            while not lines or not lines[-1].startswith("Press Ctrl-C to stop"):
                try:
                    line = stream.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    line = None
                if line is None:
                    raise AssertionError(
                        "the demo ended or stalled before staying up:\n" + "\n".join(lines)
                    )
                lines.append(line)
            out = "\n".join(lines)
            state = Path(_find(r"State directory: (\S+)", out))
            synapse_url = _find(r"Matrix homeserver: (http://\S+)", out)
            imap_port = _find(r"IMAP 127\.0\.0\.1:(\d+)", out)
            for who in ("alice", "carol", "admin"):
                assert re.search(
                    rf"@{who}-[0-9a-f]+:secir\.test +password pw-{who}-[0-9a-f]+", out
                ), out
            for who in ("alice", "bob"):
                assert re.search(rf"{who}-[0-9a-f]+@secir\.test +password pw-{who}\b", out), out
            assert re.search(r"list-[0-9a-f]+@secir\.test +password pw-list", out), out
            assert re.search(r"incident room !\S+", out) and re.search(r"control room +!\S+", out)
            for who in ("alice", "bob", "carol"):
                key = state / "keys" / f"{who}-secret.asc"
                assert str(key) in out
                assert "BEGIN PGP PRIVATE KEY BLOCK" in key.read_text()
            public = state / "keys" / "list-public.asc"
            assert str(public) in out
            assert "BEGIN PGP PUBLIC KEY BLOCK" in public.read_text()
            assert _listening(synapse_url) and _listening(imap_port)

            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=5)
    while not stream.empty() and (line := stream.get_nowait()) is not None:
        lines.append(line)
    out = "\n".join(lines)
    context = f"stdout:\n{out}\nstderr (end):\n{(tmp_path / 'stderr.log').read_text()[-4000:]}"
    assert code == 0, context
    assert "SIGINT received: stopping ..." in out, context
    assert f"Stopped and removed {state}" in out, context
    assert not state.exists()
    assert not _listening(synapse_url) and not _listening(imap_port)
