"""The detail tables of ``docs/performance.md``: one section per figure.

``report`` writes the page and the targets table; the helpers here are shared with it.
"""

from __future__ import annotations

from typing import Any


def num(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float) or value != value:
        return "–"
    return f"{value:.{digits}f}"


_SHARES = ("cpu_gpg", "cpu_workers", "cpu", "cpu_synapse", "cpu_gpg_agent", "cpu_benchmark")


def _fanout_cpu(fan: list[dict[str, Any]], cores: int) -> list[str]:
    """CPU per post of every process that shares the cores: what the fan-out's floor is."""
    rows = []
    for s in fan:
        samples = [x for x in s["fanout"]["samples"] if "cpu_gpg" in x]
        if not samples:
            continue  # a run from before these figures
        means = [sum(x.get(k, 0.0) for x in samples) / len(samples) for k in _SHARES]
        rows.append([str(s["n"]), *(num(m, 3) for m in means), num(sum(means), 3),
                     num(sum(means) / cores, 3)])  # fmt: skip
    if not rows:
        return []
    head = ["CPU per post while it fans out: each process's CPU from the post to the last "
            "SMTP 250 (means over the posts, seconds; /proc, 10 ms ticks). The "
            f"{cores} cores cannot do that work in less than its sum / {cores}.", ""]  # fmt: skip
    names = ["members", "gpg runs", "Sequoia workers", "bot", "Synapse", "gpg-agent",
             "benchmark (clients, sink)", "sum", f"sum / {cores} cores"]  # fmt: skip
    table = md_table(names, rows)
    return [*head, table, ""]


def stages_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [results["stages"][k] for k in sorted(results.get("stages", {}), key=int)]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def details(results: dict[str, Any]) -> str:
    stages = stages_of(results)
    out: list[str] = []
    fan = [s for s in stages if "fanout" in s]
    if fan:
        out += ["### Fan-out: a post in the room → the last SMTP 250 at the sink", ""]
        rows = []
        for s in fan:
            f, b = s["fanout"], s["fanout"]["breakdown"]
            rows.append([
                str(s["n"]), str(f["latency"]["n"]), num(f["latency"]["median"], 3),
                num(f["latency"]["p90"], 3), num(f["latency"]["p99"], 3), num(b["gpg_calls"], 0),
                num(b["bytes"] / 1000, 1), num(b["transactions"], 0), num(b["connections"], 0),
                "yes" if f["check"].get("ok") else "NO",
                num(f["check"].get("decrypt_seconds"), 3), num(b.get("cpu"), 3),
            ])  # fmt: skip
        out += [md_table(["members", "posts", "median s", "p90 s", "p99 s", "gpg runs",
                        "KB/mail", "SMTP transactions", "connections", "mail verified",
                        "member's decrypt s", "bot CPU s/post"], rows), ""]  # fmt: skip
        out += ["Where the time goes (medians per post, seconds):", ""]
        rows = []
        for s in fan:
            b = s["fanout"]["breakdown"]
            rows.append([
                str(s["n"]), num(b["until_gpg"], 3), num(b["gpg_span"], 3),
                num(b["listing_seconds"], 3), num(b["encrypt_seconds"], 3),
                num(b["to_smtp"], 3), num(b["smtp"], 3), num(b["latency"], 3),
            ])  # fmt: skip
        # Recipient groups are encrypted in parallel: the gpg runs' wall time is their span,
        # and the summed run times can exceed it.
        out += [md_table(["members", "event → first gpg run (Matrix leg, intake)",
                        "first gpg start → last gpg end", "key listing (gpg, summed)",
                        "sign+encrypt (gpg, summed over parallel runs)",
                        "last gpg → first MAIL FROM", "SMTP hand-off (first MAIL → last 250)",
                        "total"], rows), ""]  # fmt: skip
        rows = [
            [str(s["n"]), num(s["fanout"]["breakdown"]["transactions"], 0),
             num(s["fanout"]["breakdown"]["rcpt_phase"], 3),
             num(s["fanout"]["breakdown"]["per_rcpt"] * 1000, 2),
             num(s["fanout"]["breakdown"]["data_phase"], 3),
             num(s["fanout"]["breakdown"]["bytes"] * s["fanout"]["breakdown"]["transactions"]
                / 1000, 0)]
            for s in fan
        ]  # fmt: skip
        out += ["The SMTP hand-off, split (medians per post; sums over its transactions):", ""]
        out += [md_table(["members", "transactions", "MAIL → last RCPT 250 s",
                        "per RCPT round trip ms", "last RCPT → DATA 250 s",
                        "KB sent per post"], rows), ""]  # fmt: skip
        out += _fanout_cpu(fan, results.get("machine", {}).get("cores") or 2)
    box = next((s for s in stages if "mailboxes" in s), None)
    if box:
        e, last = box["mailboxes"]["every_mailbox"], box["mailboxes"]["last_mailbox"]
        out += [f"### Room → {box['n']} members' Dovecot mailboxes (via Postfix)", ""]
        out += [md_table(["", "samples", "median s", "p90 s", "p99 s", "max s"], [
            ["each mailbox", str(e["n"]), num(e["median"], 3), num(e["p90"], 3),
             num(e["p99"], 3), num(e["max"], 3)],
            ["last mailbox of a post", str(last["n"]), num(last["median"], 3),
             num(last["p90"], 3), num(last["p99"], 3), num(last["max"], 3)],
        ]), ""]  # fmt: skip
    m2r = [(s["n"], "Dovecot", s["mail2room"]) for s in stages if "mail2room" in s]
    m2r += [(s["n"], "sandbox", s["mail2room_sandbox"]) for s in stages if "mail2room_sandbox" in s]
    if m2r:
        out += ["### Mail → room: SMTP submission → decrypted in a member's Matrix client", ""]
        rows = []
        for n, server, m in m2r:
            b = m["breakdown"]
            rows.append([
                str(n), server, str(m["latency"]["n"]), num(m["latency"]["median"], 3),
                num(m["latency"]["p90"], 3), num(b.get("until_gpg"), 3),
                num(b.get("decrypt_seconds"), 3), num(b.get("encrypt_seconds"), 3),
                num(b.get("after_gpg"), 3), num(b.get("gpg_calls"), 0),
            ])  # fmt: skip
        out += [md_table(["members", "server", "mails", "median s", "p90 s",
                        "submitted → first gpg run (MTA, IMAP push, fetch)",
                        "decrypt+verify (gpg)", "fan-out sign+encrypt (gpg)",
                        "last gpg → in the room", "gpg runs"], rows), ""]  # fmt: skip
    burst = next((s["burst"] for s in stages if "burst" in s), None)
    if burst:
        out += [f"### Burst: {burst['mails']} member mails queued before the start, "
                f"{burst['n']} members", ""]  # fmt: skip
        out += [md_table(["", "value"], [
            ["in the room", f"{burst['in_room']} of {burst['mails']}"],
            ["first in the room, after the start", f"{num(burst['first_in_room'], 1)} s"],
            ["all in the room, after the start", f"{num(burst['seconds_from_start'], 1)} s"],
            ["rate from the start / after the first sync",
             f"{num(burst['rate_from_start'])} / {num(burst['rate_after_sync'])} mails/s"],
            ["lost, duplicates", f"{burst['lost']}, {burst['duplicates']}"],
            ["out of order within a thread, outside their Matrix thread",
             f"{burst['out_of_order']}, {burst['wrong_thread']}"],
            ["list copies mailed (to every member but the author)", str(burst["mailed"])],
            ["last mail decided (its room rows queued), after the start",
             f"{num(burst.get('last_decided'), 1)} s"],
            ["last list copy at the SMTP sink, after the start",
             f"{num(burst.get('last_list_copy'), 1)} s"],
            ["CPU of the bot / of its gpg runs, start → last list copy",
             f"{num(burst.get('cpu_to_last_copy'), 1)} / "
             f"{num(burst.get('gpg_cpu_to_last_copy'), 1)} s"],
            ["peak RSS of the bot", f"{num(burst['rss_peak_mib'], 0)} MiB"],
            ["CPU of the bot's process, first sync → last in the room",
             f"{num(burst.get('cpu_after_sync'), 1)} s"],
            ["CPU of Synapse / the list's gpg-agent / the benchmark (member clients, sink), "
             "start → last in the room",
             " / ".join(f"{num(burst.get('cpu_others', {}).get(k), 1)}"
                        for k in ("synapse", "gpg_agent", "benchmark")) + " s"],
            ["composing and APPENDing the mails (not timed above)",
             f"{num(burst['queue_seconds'], 1)} s"],
        ]), ""]  # fmt: skip
        gpg = burst.get("gpg", {})
        if gpg:
            busy = sum(g["seconds"] for g in gpg.values())
            out += ["gpg runs during the burst (start → last in the room): "
                    + ", ".join(f"{int(g['count'])} {kind} ({num(g['seconds'], 1)} s)"
                                for kind, g in sorted(gpg.items()))
                    + f"; gpg was running {num(100 * busy / burst['seconds_from_start'], 0)} % "
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
            f"{s['n']} members", num(st["running"]), num(st["synced"]), num(st["imap"]),
            num(st["rss_mib"], 0), num(after[1], 0),
        ])  # fmt: skip
        if "stored" in s:
            t = s["stored"]
            rows.append([
                f"{s['n']} members, {t['posts']} stored posts ({num(t['db_mib'], 0)} MiB file)",
                num(t["start"]["running"]), num(t["start"]["synced"]), num(t["start"]["imap"]),
                num(t["start"]["rss_mib"], 0), num(t["rss_after_mib"][1], 0),
            ])  # fmt: skip
    out += [md_table(["bot", "'running' logged s", "first sync committed s", "IMAP connected s",
                    "RSS idle MiB", "peak RSS after posts MiB"], rows), ""]  # fmt: skip
    imports = [
        [f"{s['n']}", str(s["import"]["members"]), num(s["import"]["seconds"], 1),
         num(s["import"]["seconds"] / max(1, s["import"]["members"]), 3),
         str(s["import"]["gpg_runs"])]
        for s in stages if "import" in s
    ]  # fmt: skip
    if imports:
        out += ["`secir-bot member import` (the new members of each stage):", ""]
        out += [md_table(["stage N", "members added", "seconds", "s per member", "gpg runs"],
                       imports), ""]  # fmt: skip
    it = results.get("import_time")
    if it:
        top = ", ".join(f"{t['module']} {num(t['seconds'])}" for t in it["top"][:6])
        out += [f"`import secir_bot.cli`: {num(it['wall']['median'])} s wall (median of "
                f"{it['wall']['n']}); `-X importtime` total {num(it['importtime_total'])} s, "
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
            rows.append([k, size, where or "first imported", num(v, 3)])
        rows += [["(list-keys of all)", key, "", num(v, 3)]
                 for key, v in scaling["list_keys"].items()]  # fmt: skip
        out += [md_table(["k recipients", "K keys in the keyring", "recipients' keys",
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
            f", {prof['posts']} posts (fan-out median {num(prof['latency']['median'], 3)} s "
            "while sampled)"
        )
    # py-spy's own count of samples is no measure of CPU time: it cannot always tell a
    # thread waiting in epoll from one at work. The shares say where the work is.
    out = [
        f"#### Where the bot's Python works during {what} (py-spy)",
        "",
        f"Sampled at 200 Hz for {num(prof['seconds'], 1)} s{per}; share of the samples "
        "(all threads) whose stack holds the function:",
        "",
    ]
    rows = [[f"`{f['frame']}`", f"{f['share'] * 100:.0f} %"] for f in prof["inclusive"]]
    out += [md_table(["function (inclusive)", "share of samples"], rows), ""]
    rows = [[f"`{f['frame']}`", f"{f['share'] * 100:.0f} %"] for f in prof["own"]]
    out += [md_table(["function (own time)", "share of samples"], rows), ""]
    return out
