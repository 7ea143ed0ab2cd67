"""The table and ``docs/performance.md``.

The page has a generated part between two markers, rewritten by every run that writes it,
and a hand-written analysis after it that a run leaves alone.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
SHARED_LOAD = 0.5  # a 1-min load average above this at the start means someone else works


def _run(*command: str) -> str:
    try:
        out = subprocess.run(command, capture_output=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).decode(errors="replace").strip()


def machine() -> dict[str, Any]:
    """The machine, taken before the benchmark adds any load of its own."""
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    try:
        import synapse

        synapse_version = str(synapse.__version__)
    except ImportError:
        synapse_version = "?"
    gpg = _run("gpg", "--version").splitlines()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "ram_gib": total_kib / 2**20,
        "debian": Path("/etc/debian_version").read_text().strip(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "gpg": " ".join(gpg[0].split()[-1:]) if gpg else "?",
        "libgcrypt": gpg[1].split()[-1] if len(gpg) > 1 else "?",
        "synapse": synapse_version,
        "postfix": _run("/usr/sbin/postconf", "-h", "mail_version"),
        "dovecot": _run("dovecot", "--version").split()[0] if _run("dovecot", "--version") else "?",
        "load_start": os.getloadavg(),
        "uptime_start": _run("uptime"),
    }


def machine_after() -> dict[str, Any]:
    return {"load_end": os.getloadavg(), "uptime_end": _run("uptime")}


def _s(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float) or value != value:
        return "–"
    return f"{value:.{digits}f}"


def _stages(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [results["stages"][k] for k in sorted(results.get("stages", {}), key=int)]


def _targets(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, target, measured, verdict) rows."""
    rows: list[tuple[str, str, str, str]] = []
    stages = _stages(results)
    fan = [s for s in stages if "fanout" in s]
    if fan:
        big = fan[-1]
        lat = big["fanout"]["latency"]
        rows.append((
            f"fan-out, 1 post → {big['n']} email members, Matrix event to last SMTP 250",
            "≤ 0.5 s",
            f"median {_s(lat['median'])} s (p90 {_s(lat['p90'])}, p99 {_s(lat['p99'])})",
            "met" if lat["median"] <= 0.5 else "missed",
        ))  # fmt: skip
        calls = ", ".join(f"{s['n']}: {_s(s['fanout']['breakdown']['gpg_calls'], 0)}" for s in fan)
        kinds = big["fanout"].get("gpg_kinds", {})
        per_member = any(s["fanout"]["breakdown"]["gpg_calls"] >= s["n"] > 2 for s in fan)
        rows.append((
            "gpg invocations per post",
            "bounded by recipient groups, never one per member",
            f"{calls} (at {big['n']}: {', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))})",
            "missed" if per_member else "met",
        ))  # fmt: skip
        size = big["fanout"]["breakdown"]["bytes"]
        rows.append((
            f"bytes per delivered mail at {big['n']} members",
            "≤ 40 KB (ed25519 keys)",
            f"{_s(size / 1000, 1)} KB ({results.get('options', {}).get('keys', '?')})",
            "met" if size <= 40_000 else "missed",
        ))  # fmt: skip
    box = next((s for s in stages if "mailboxes" in s), None)
    if box:
        every = box["mailboxes"]["every_mailbox"]
        rows.append((
            f"room → members' mailboxes, {box['n']} members, p50 / p99",
            "≤ 0.25 s / ≤ 1 s",
            f"{_s(every['median'])} s / {_s(every['p99'])} s",
            "met" if every["median"] <= 0.25 and every["p99"] <= 1 else "missed",
        ))  # fmt: skip
    m2r = [s for s in stages if "mail2room" in s]
    if m2r:
        text = ", ".join(f"{s['n']}: {_s(s['mail2room']['latency']['median'])} s" for s in m2r)
        ok = all(s["mail2room"]["latency"]["median"] <= 0.7 for s in m2r)
        rows.append(
            ("mail → room, p50, Dovecot (by N)", "≤ 0.7 s", text, "met" if ok else "missed")
        )
    sandbox = next((s for s in stages if "mail2room_sandbox" in s), None)
    if sandbox:
        lat = sandbox["mail2room_sandbox"]["latency"]
        rows.append((
            f"mail → room, p50, sandbox server ({sandbox['n']} members)",
            "≤ 0.1 s",
            f"{_s(lat['median'])} s",
            "met" if lat["median"] <= 0.1 else "missed",
        ))  # fmt: skip
    burst = next((s["burst"] for s in stages if "burst" in s), None)
    if burst:
        ok = burst["rate_from_start"] >= 20 and not burst["lost"] and not burst["out_of_order"]
        rows.append((
            f"burst: {burst['mails']} queued member mails → room ({burst['n']} members)",
            "≥ 20 mails/s, none lost, order kept within each thread",
            f"{_s(burst['rate_from_start'])} mails/s ({_s(burst['seconds_from_start'], 0)} s "
            f"from start); lost {burst['lost']}, duplicates {burst['duplicates']}, "
            f"out of order {burst['out_of_order']}, outside their thread {burst['wrong_thread']}",
            "met" if ok else "missed",
        ))  # fmt: skip
    stored = next(({"n": s["n"], **s["stored"]} for s in stages if "stored" in s), None)
    if stored:
        rss = max(stored["start"]["rss_mib"], stored["rss_after_mib"][1])
        rows.append((
            f"RSS, {stored['n']} members and {stored['posts']} stored posts",
            "≤ 150 MiB, measured",
            f"{_s(stored['start']['rss_mib'], 0)} MiB idle, {_s(rss, 0)} MiB peak after posts",
            "met" if rss <= 150 else "missed",
        ))  # fmt: skip
    starts = [s for s in stages if "start" in s]
    if starts:
        text = ", ".join(f"{s['n']}: {_s(s['start']['synced'])} s" for s in starts)
        imports = results.get("import_time", {}).get("wall", {}).get("median")
        rows.append((
            "`secir-bot run` start to first sync (by N)",
            "measured and reported",
            text + (f"; `import secir_bot.cli` {_s(imports)} s" if imports else ""),
            "reported",
        ))  # fmt: skip
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    """The targets table (what ``make bench`` prints at the end)."""
    return _table(["figure", "target", "measured", ""], [list(row) for row in _targets(results)])


def _details(results: dict[str, Any]) -> str:
    stages = _stages(results)
    out: list[str] = []
    fan = [s for s in stages if "fanout" in s]
    if fan:
        out += ["### Fan-out: a post in the room → the last SMTP 250 at the sink", ""]
        rows = []
        for s in fan:
            f, b = s["fanout"], s["fanout"]["breakdown"]
            rows.append([
                str(s["n"]), str(f["latency"]["n"]), _s(f["latency"]["median"], 3),
                _s(f["latency"]["p90"], 3), _s(f["latency"]["p99"], 3), _s(b["gpg_calls"], 0),
                _s(b["bytes"] / 1000, 1), _s(b["transactions"], 0), _s(b["connections"], 0),
                "yes" if f["check"].get("ok") else "NO",
                _s(f["check"].get("decrypt_seconds"), 3), _s(b.get("cpu"), 3),
            ])  # fmt: skip
        out += [_table(["members", "posts", "median s", "p90 s", "p99 s", "gpg runs",
                        "KB/mail", "SMTP transactions", "connections", "mail verified",
                        "member's decrypt s", "bot CPU s/post"], rows), ""]  # fmt: skip
        out += ["Where the time goes (medians per post, seconds):", ""]
        rows = []
        for s in fan:
            b = s["fanout"]["breakdown"]
            other = b["gpg_span"] - b["gpg_seconds"]
            rows.append([
                str(s["n"]), _s(b["until_gpg"], 3), _s(b["listing_seconds"], 3),
                _s(b["encrypt_seconds"], 3), _s(other, 3), _s(b["to_smtp"], 3),
                _s(b["smtp"], 3), _s(b["latency"], 3),
            ])  # fmt: skip
        out += [_table(["members", "event → first gpg run (Matrix leg, intake)",
                        "key listing (gpg)", "sign+encrypt (gpg)", "between gpg runs",
                        "last gpg → first MAIL FROM", "SMTP hand-off (first MAIL → last 250)",
                        "total"], rows), ""]  # fmt: skip
        rows = [
            [str(s["n"]), _s(s["fanout"]["breakdown"]["transactions"], 0),
             _s(s["fanout"]["breakdown"]["rcpt_phase"], 3),
             _s(s["fanout"]["breakdown"]["per_rcpt"] * 1000, 2),
             _s(s["fanout"]["breakdown"]["data_phase"], 3),
             _s(s["fanout"]["breakdown"]["bytes"] * s["fanout"]["breakdown"]["transactions"]
                / 1000, 0)]
            for s in fan
        ]  # fmt: skip
        out += ["The SMTP hand-off, split (medians per post; sums over its transactions):", ""]
        out += [_table(["members", "transactions", "MAIL → last RCPT 250 s",
                        "per RCPT round trip ms", "last RCPT → DATA 250 s",
                        "KB sent per post"], rows), ""]  # fmt: skip
    box = next((s for s in stages if "mailboxes" in s), None)
    if box:
        e, last = box["mailboxes"]["every_mailbox"], box["mailboxes"]["last_mailbox"]
        out += [f"### Room → {box['n']} members' Dovecot mailboxes (via Postfix)", ""]
        out += [_table(["", "samples", "median s", "p90 s", "p99 s", "max s"], [
            ["each mailbox", str(e["n"]), _s(e["median"], 3), _s(e["p90"], 3),
             _s(e["p99"], 3), _s(e["max"], 3)],
            ["last mailbox of a post", str(last["n"]), _s(last["median"], 3),
             _s(last["p90"], 3), _s(last["p99"], 3), _s(last["max"], 3)],
        ]), ""]  # fmt: skip
    m2r = [(s["n"], "Dovecot", s["mail2room"]) for s in stages if "mail2room" in s]
    m2r += [(s["n"], "sandbox", s["mail2room_sandbox"]) for s in stages if "mail2room_sandbox" in s]
    if m2r:
        out += ["### Mail → room: SMTP submission → decrypted in a member's Matrix client", ""]
        rows = []
        for n, server, m in m2r:
            b = m["breakdown"]
            rows.append([
                str(n), server, str(m["latency"]["n"]), _s(m["latency"]["median"], 3),
                _s(m["latency"]["p90"], 3), _s(b.get("until_gpg"), 3),
                _s(b.get("decrypt_seconds"), 3), _s(b.get("encrypt_seconds"), 3),
                _s(b.get("after_gpg"), 3), _s(b.get("gpg_calls"), 0),
            ])  # fmt: skip
        out += [_table(["members", "server", "mails", "median s", "p90 s",
                        "submitted → first gpg run (MTA, IMAP push, fetch)",
                        "decrypt+verify (gpg)", "fan-out sign+encrypt (gpg)",
                        "last gpg → in the room", "gpg runs"], rows), ""]  # fmt: skip
    burst = next((s["burst"] for s in stages if "burst" in s), None)
    if burst:
        out += [f"### Burst: {burst['mails']} member mails queued before the start, "
                f"{burst['n']} members", ""]  # fmt: skip
        out += [_table(["", "value"], [
            ["in the room", f"{burst['in_room']} of {burst['mails']}"],
            ["first in the room, after the start", f"{_s(burst['first_in_room'], 1)} s"],
            ["all in the room, after the start", f"{_s(burst['seconds_from_start'], 1)} s"],
            ["rate from the start / after the first sync",
             f"{_s(burst['rate_from_start'])} / {_s(burst['rate_after_sync'])} mails/s"],
            ["lost, duplicates", f"{burst['lost']}, {burst['duplicates']}"],
            ["out of order within a thread, outside their Matrix thread",
             f"{burst['out_of_order']}, {burst['wrong_thread']}"],
            ["list copies mailed (to every member but the author)", str(burst["mailed"])],
            ["peak RSS of the bot", f"{_s(burst['rss_peak_mib'], 0)} MiB"],
            ["CPU of the bot's process, first sync → last in the room",
             f"{_s(burst.get('cpu_after_sync'), 1)} s"],
            ["composing and APPENDing the mails (not timed above)",
             f"{_s(burst['queue_seconds'], 1)} s"],
        ]), ""]  # fmt: skip
        gpg = burst.get("gpg", {})
        if gpg:
            busy = sum(g["seconds"] for g in gpg.values())
            out += ["gpg runs during the burst (start → last in the room): "
                    + ", ".join(f"{int(g['count'])} {kind} ({_s(g['seconds'], 1)} s)"
                                for kind, g in sorted(gpg.items()))
                    + f"; gpg was running {_s(100 * busy / burst['seconds_from_start'], 0)} % "
                    "of the time.", ""]  # fmt: skip
        out += _profile_lines(burst.get("profile"), "the burst, from the first sync on", None)
    out += _memory_and_start(results, stages)
    return "\n".join(out)


def _memory_and_start(results: dict[str, Any], stages: list[dict[str, Any]]) -> list[str]:
    out = ["### Memory and start-up of `secir-bot run`", ""]
    rows = []
    for s in stages:
        if "start" not in s:
            continue
        st = s["start"]
        after = s.get("rss_after_mib", [float("nan")] * 2)
        rows.append([
            f"{s['n']} members", _s(st["running"]), _s(st["synced"]), _s(st["imap"]),
            _s(st["rss_mib"], 0), _s(after[1], 0),
        ])  # fmt: skip
        if "stored" in s:
            t = s["stored"]
            rows.append([
                f"{s['n']} members, {t['posts']} stored posts ({_s(t['db_mib'], 0)} MiB file)",
                _s(t["start"]["running"]), _s(t["start"]["synced"]), _s(t["start"]["imap"]),
                _s(t["start"]["rss_mib"], 0), _s(t["rss_after_mib"][1], 0),
            ])  # fmt: skip
    out += [_table(["bot", "'running' logged s", "first sync committed s", "IMAP connected s",
                    "RSS idle MiB", "peak RSS after posts MiB"], rows), ""]  # fmt: skip
    imports = [
        [f"{s['n']}", str(s["import"]["members"]), _s(s["import"]["seconds"], 1),
         _s(s["import"]["seconds"] / max(1, s["import"]["members"]), 3),
         str(s["import"]["gpg_runs"])]
        for s in stages if "import" in s
    ]  # fmt: skip
    if imports:
        out += ["`secir-bot member import` (the new members of each stage):", ""]
        out += [_table(["stage N", "members added", "seconds", "s per member", "gpg runs"],
                       imports), ""]  # fmt: skip
    it = results.get("import_time")
    if it:
        top = ", ".join(f"{t['module']} {_s(t['seconds'])}" for t in it["top"][:6])
        out += [f"`import secir_bot.cli`: {_s(it['wall']['median'])} s wall (median of "
                f"{it['wall']['n']}); `-X importtime` total {_s(it['importtime_total'])} s, "
                f"own time by package: {top} s.", ""]  # fmt: skip
    for s in stages:
        if s.get("profile"):
            out += _profile_lines(s["profile"], f"fan-out at {s['n']} members", s["profile"])
    scaling = results.get("gpg_scaling")
    if scaling:
        out += ["### gpg alone: one sign+encrypt to k recipients in a keyring of K keys", ""]
        rows = []
        for key, v in scaling["sign_encrypt"].items():
            k, size, *at = key.split("/")
            where = {"front": "first imported", "back": "last imported"}.get(at[0] if at else "")
            rows.append([k, size, where or "first imported", _s(v, 3)])
        rows += [["(list-keys of all)", key, "", _s(v, 3)]
                 for key, v in scaling["list_keys"].items()]  # fmt: skip
        out += [_table(["k recipients", "K keys in the keyring", "recipients' keys",
                        "median s"], rows), ""]  # fmt: skip
    return out


def _profile_lines(prof: dict[str, Any] | None, what: str, posts: Any) -> list[str]:
    if not prof:
        return []
    if "skipped" in prof:
        return [f"py-spy profile of {what} skipped: {prof['skipped']}", ""]
    per = ""
    if posts and prof.get("posts"):
        per = (
            f", {prof['posts']} posts (fan-out median {_s(prof['latency']['median'], 3)} s "
            "while sampled)"
        )
    # py-spy's own count of samples is no measure of CPU time: it cannot always tell a
    # thread waiting in epoll from one at work. The shares say where the work is.
    out = [
        f"#### Where the bot's Python works during {what} (py-spy)",
        "",
        f"Sampled at 200 Hz for {_s(prof['seconds'], 1)} s{per}; share of the samples "
        "(all threads) whose stack holds the function:",
        "",
    ]
    rows = [[f"`{f['frame']}`", f"{f['share'] * 100:.0f} %"] for f in prof["inclusive"]]
    out += [_table(["function (inclusive)", "share of samples"], rows), ""]
    rows = [[f"`{f['frame']}`", f"{f['share'] * 100:.0f} %"] for f in prof["own"]]
    out += [_table(["function (own time)", "share of samples"], rows), ""]
    return out


def _machine(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    load = m.get("load_start", (0, 0, 0))
    seen = results.get("load_seen", [])
    shared = load[0] > SHARED_LOAD
    note = (
        "**shared**: other work was running when the benchmark started, so every figure "
        "here is pessimistic; re-run on a quiet machine before comparing"
        if shared
        else "quiet at the start"
    )
    rows = [
        ["CPU", f"{m.get('cores')} × {m.get('cpu')}"],
        ["RAM", f"{_s(m.get('ram_gib'), 1)} GiB"],
        ["OS", f"Debian {m.get('debian')}, Linux {m.get('kernel')}"],
        ["Python", str(m.get("python"))],
        ["GnuPG", f"{m.get('gpg')} (libgcrypt {m.get('libgcrypt')})"],
        [
            "Synapse / Postfix / Dovecot",
            f"{m.get('synapse')} / {m.get('postfix')} / {m.get('dovecot')}",
        ],
        [
            "load average (1, 5, 15 min) at the start",
            ", ".join(_s(x) for x in load) + f" — {note}",
        ],
        [
            "1-min load seen during the run",
            f"{_s(min(seen, default=0))} to {_s(max(seen, default=0))}",
        ],
    ]
    return _table(["machine", ""], rows)


def generated(results: dict[str, Any]) -> str:
    opts = results.get("options", {})
    sizes = ", ".join(str(s) for s in opts.get("sizes", ()))
    return "\n".join([
        BEGIN,
        f"Measured {results.get('machine', {}).get('date', '?')} by `make bench` "
        f"(`scripts/bench.py`): N = {sizes} email members ({opts.get('keys')} keys), "
        f"{opts.get('posts')} measured posts per figure and N after one warm-up post, "
        f"`smtp.max_recipients` = {opts.get('max_recipients')}.",
        "",
        _machine(results),
        "",
        "## Targets of issue 11 and what was measured",
        "",
        table(results),
        "",
        "## Details",
        "",
        _details(results),
        END,
    ])  # fmt: skip


HEADER = """# Performance

What `make bench` measures, on what, and where the time goes. The part between the two
markers is written by the benchmark (`scripts/bench.py`) on every full run; the analysis
after it is written by hand and says which run it refers to.

How it is measured: see the docstrings of `scripts/bench.py` and `scripts/benchkit/`.
"""


def write_page(path: Path, results: dict[str, Any]) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER + "\n" + BEGIN + END
    new = generated(results)
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: new, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
