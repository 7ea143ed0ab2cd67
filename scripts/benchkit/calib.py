"""How fast the machine was during each part of the benchmark: a fixed probe around it.

The benchmark runs on a shared virtual machine whose speed changes by the minute: the same
code gave 20.9 and 27.6 mails/s in the burst minutes apart. So every part (the fan-out at
each N, mail → room, the burst, …) is bracketed by a probe, a fixed workload timed in CPU
seconds of the probe itself, never wall time:

* **Python**: a fixed pure-Python loop (``speedloop.py``), the CPU time of the thread that
  runs it (``time.thread_time``);
* **gpg**: one sign+encrypt of a fixed 4 KB text to 100 cv25519 keys, as the bot's fan-out
  calls gpg, in a keyring of the probe's own (101 ed25519 keys made at set-up, so that the
  workload is the same whatever ``--keys`` and ``--sizes`` say); the gpg process's own CPU
  from its rusage (``os.wait4``). The signature is made by the probe keyring's gpg-agent,
  whose CPU is not counted; the cost is the recipients' ECDH in libgcrypt;
* **/proc/stat** before and after the part: the share of the cores' time that was busy,
  and the share stolen by the hypervisor for other guests (time a process did not run,
  which its CPU time does not count: hence both figures);
* **during** the part, a sampler process runs a tenth of the Python loop once a second.
  The machine's speed changes within seconds (the same short loop took 10–11 ms or
  20–26 ms, by turns, second by second on 2026-12-03), so two probes around a part of a
  minute cannot tell its mean speed; the samples can (at about 2 % of one core). The swings
  come from the host, not from the load inside the machine: a busy loop on the other core
  left the loop at 10-11 ms;
* the **others**: the part's busy time less the CPU of the benchmark's own processes (its
  process tree: the bot and its gpg runs, Synapse, Postfix, Dovecot, the sampler; and the
  gpg-agents of its homes), i.e. what other work on the machine took from the two cores.

The **speed index** of a part is the probes' reference CPU seconds divided by what they took
around that part ("around"), or the sampler's reference over the mean of its samples
("during"): 1.00 is as fast as the reference, 0.75 means the same work needed a third more
CPU time. It stands beside the figures as a measurement of the machine; it never
corrects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secir_bot.sandbox.scratch import short_tempdir

from .cpu import TICK, tree_snapshot, tree_used
from .details import md_table, num, stages_of
from .people import KeyWorld, email_members
from .speedloop import SAMPLE_ROUNDS, python_work

if TYPE_CHECKING:
    from .run import Bench

# CPU seconds of the probes on this VM (2 × Intel Xeon under KVM, Debian 12, Python 3.11.2,
# GnuPG 2.2.40, libgcrypt 1.10.1), measured on 2026-12-03 with `python -m benchkit.calib 15`
# from scripts/, started when the machine had been idle (busy < 3 %) for 4 s. The host's
# speed changes by itself, by about half, and for seconds at a time, even in such a quiet
# minute: at 17:58 UTC the medians of 15 probes were 0.099 s (Python) and 0.179 s (gpg), at
# 18:06 0.260 s and 0.321 s (fastest 0.106 s and 0.196 s); the sampler's loop takes 10-11 ms
# or 20-26 ms by turns. The reference is the fast state, the 17:58 medians and the 10.5 ms
# of the fast loops: 1.00 means as fast as this machine gets, about 0.45 its slow state.
# Fixed constants, so that runs on different days compare; re-measure (and say so in
# docs/performance.md) only when the probes' work changes.
REFERENCE_PYTHON = 0.10
REFERENCE_GPG = 0.18
REFERENCE = REFERENCE_PYTHON + REFERENCE_GPG
REFERENCE_SAMPLE = 0.0105  # the sampler's short loop (speedloop.SAMPLE_ROUNDS)

PROBE_ROUNDS = 800_000  # the probe's Python loop
SAMPLE_INTERVAL = 1.0  # seconds between the sampler's short loops during a part

RECIPIENTS = 100
TEXT = "".join(f"{i:04d} the probe's fixed text, as long as a list mail's body.....\n"
               for i in range(64)).encode()  # fmt: skip
REUSE_SECONDS = 2.0  # a probe this recent serves as the next part's "before"
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def stat_snapshot(text: str | None = None) -> tuple[int, ...]:
    """The machine-wide ``cpu`` line of /proc/stat (or of ``text``): ticks per state."""
    if text is None:
        text = Path("/proc/stat").read_text()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1 : 1 + len(STAT_FIELDS)]]
            return tuple(values + [0] * (len(STAT_FIELDS) - len(values)))
    raise ValueError("no 'cpu' line in /proc/stat")


def cpu_shares(
    before: tuple[int, ...], after: tuple[int, ...], ours: float = 0.0, tick: float = TICK
) -> dict[str, float]:
    """Busy and stolen shares (%) of all cores' time between two /proc/stat snapshots, and
    the busy time's split between the benchmark's processes (``ours``, CPU seconds) and
    everything else on the machine.

    Busy is user, nice, system, irq and softirq time; steal is time the hypervisor gave
    to other guests. Guest time is already inside user time, so it is not added again.
    """
    delta = dict(zip(STAT_FIELDS, (a - b for a, b in zip(after, before, strict=True)), strict=True))
    total = sum(delta.values())
    if total <= 0:
        return {"busy_pct": 0.0, "steal_pct": 0.0, "ours_pct": 0.0, "others_pct": 0.0}
    busy = 100 * sum(delta[k] for k in ("user", "nice", "system", "irq", "softirq")) / total
    mine = min(busy, 100 * ours * tick / total)  # ticks are coarse: never above the busy time
    return {
        "busy_pct": busy,
        "steal_pct": 100 * delta["steal"] / total,
        "ours_pct": mine,
        "others_pct": busy - mine,
    }


def speed_index(probes: list[dict[str, float]]) -> float:
    """Reference CPU seconds of a probe / the mean CPU seconds the ``probes`` took."""
    measured = statistics.fmean(p["python_s"] + p["gpg_s"] for p in probes)
    return REFERENCE / measured


def sampled_index(samples: list[float]) -> float | None:
    """Reference CPU seconds of the sampler's loop / the mean of its ``samples`` (None:
    no sample)."""
    return REFERENCE_SAMPLE / statistics.fmean(samples) if samples else None


class Sampler:
    """The short Python loop once a second, in a process of its own, during a part."""

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        script = Path(__file__).with_name("speedloop.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def stop(self) -> list[float]:
        """Stop the sampler; the CPU seconds of each of its loops."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read().decode()
        self.proc.stdout.close()
        if self.proc.wait(timeout=30) != 0:
            raise RuntimeError(f"the speed sampler exited with {self.proc.returncode}")
        return [float(line.split()[1]) for line in out.splitlines() if line.strip()]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate()


class Prober:
    """The probe's own GnuPG material and its most recent probe."""

    def __init__(self, root: Path) -> None:
        self.world = KeyWorld(root, "ed25519")
        self.last: dict[str, float] | None = None
        self.signer = ""
        self.recipients: list[str] = []

    @classmethod
    def make(cls, root: Path) -> Prober:
        prober = cls(root)
        people = email_members(RECIPIENTS + 1)
        prober.world.generate(people)
        prober.signer = prober.world.fingerprint(people[0].email)
        prober.recipients = [prober.world.fingerprint(p.email) for p in people[1:]]
        prober.gpg_work()  # starts the probe keyring's gpg-agent, outside any figure
        return prober

    def gpg_work(self) -> float:
        """One sign+encrypt of the fixed text; the CPU seconds of the gpg process."""
        command = ["gpg", "--homedir", str(self.world.home), "--batch", "--no-tty",
                   "--encrypt", "--sign", "--default-key", self.signer, "--armor",
                   "--always-trust", "--throw-keyids",
                   *(a for fpr in self.recipients for a in ("--recipient", fpr))]  # fmt: skip
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(TEXT)
        proc.stdin.close()
        errors = proc.stderr.read()
        proc.stderr.close()
        # wait4, not wait: only it gives this one child's rusage.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"the gpg probe failed: {errors.decode(errors='replace')[-500:]}")
        return usage.ru_utime + usage.ru_stime

    def probe(self) -> dict[str, float]:
        """Run both probes (the Python one in the calling thread); remember the result."""
        at = time.time()
        self.last = {"at": at, "python_s": python_work(PROBE_ROUNDS), "gpg_s": self.gpg_work()}
        self.last["seconds"] = time.time() - at
        return self.last

    def recent(self) -> dict[str, float] | None:
        if self.last and time.time() - (self.last["at"] + self.last["seconds"]) < REUSE_SECONDS:
            return self.last
        return None

    def close(self) -> None:
        self.world.close()


@contextlib.asynccontextmanager
async def part(b: Bench, name: str, n: int) -> AsyncIterator[None]:
    """Probe the machine before and after the part ``name`` of stage ``n``, sample it
    during the part; keep it all, with the /proc/stat shares, in the stage's ``speed``."""
    prober = b.prober
    assert prober is not None
    before = prober.recent() or await _probe(prober)
    tree = tree_snapshot(os.getpid(), str(b.root))
    stat, start, load = stat_snapshot(), time.time(), os.getloadavg()[0]
    sampler = Sampler()
    try:
        yield
    except BaseException:
        sampler.kill()
        raise
    samples = await asyncio.to_thread(sampler.stop)
    stat_after = stat_snapshot()
    shares = cpu_shares(stat, stat_after, tree_used(tree, tree_snapshot(os.getpid(), str(b.root))))
    seconds = time.time() - start
    after = await _probe(prober)
    probes = [before, after]
    index, during = speed_index(probes), sampled_index(samples)
    record = {
        "start": start,
        "seconds": seconds,
        "probes": probes,
        "index": index,
        "index_python": REFERENCE_PYTHON / statistics.fmean(p["python_s"] for p in probes),
        "index_gpg": REFERENCE_GPG / statistics.fmean(p["gpg_s"] for p in probes),
        "samples": samples,
        "index_during": during,
        "load": [load, os.getloadavg()[0]],
        **shares,
    }
    b.stage(n).setdefault("speed", {})[name] = record
    b.say(
        f"N={n} {name}: machine speed {index:.2f} around, {num(during)} during "
        f"({len(samples)} samples); probe Python {before['python_s']:.3f} → "
        f"{after['python_s']:.3f} s, gpg {before['gpg_s']:.3f} → {after['gpg_s']:.3f} s; "
        f"busy {shares['busy_pct']:.0f} % (benchmark {shares['ours_pct']:.0f}, others "
        f"{shares['others_pct']:.0f}), steal {shares['steal_pct']:.1f} %"
    )


async def _probe(prober: Prober) -> dict[str, float]:
    # In a thread: the member clients and the sink keep running; the Python probe counts
    # only its own thread's CPU.
    return await asyncio.to_thread(prober.probe)


def index_of(stage: dict[str, Any] | None, name: str) -> str:
    """The speed indexes of part ``name`` of ``stage``, "during / around", as the targets
    table shows them."""
    record = (stage or {}).get("speed", {}).get(name)
    return f"{num(record.get('index_during'))} / {num(record['index'])}" if record else "–"


def machine_table(results: dict[str, Any]) -> str:
    """The page's table of the probes around every part ("" for runs made without them)."""
    rows = []
    for stage in stages_of(results):
        for name, r in stage.get("speed", {}).items():
            before, after = r["probes"]
            rows.append([
                name, str(stage["n"]), time.strftime("%H:%M:%S", time.gmtime(r["start"])),
                num(r["seconds"], 0), f"{num(before['python_s'], 3)} → {num(after['python_s'], 3)}",
                f"{num(before['gpg_s'], 3)} → {num(after['gpg_s'], 3)}", num(r["index"]),
                _samples(r.get("samples", [])), num(r.get("index_during")),
                f"{num(r['busy_pct'], 0)} ({num(r.get('ours_pct'), 0)} / "
                f"{num(r.get('others_pct'), 0)})", num(r["steal_pct"], 1),
                f"{num(r['load'][0])} → {num(r['load'][1])}",
            ])  # fmt: skip
    if not rows:
        return ""
    head = (
        "CPU seconds of the machine-speed probe just before and just after each part (a "
        f"fixed Python loop, reference {REFERENCE_PYTHON} s; gpg sign+encrypt of 4 KB to "
        f"{RECIPIENTS} cv25519 keys, reference {REFERENCE_GPG} s), and of a tenth of the "
        f"Python loop once a second during the part (reference {REFERENCE_SAMPLE * 1000:.1f} "
        "ms); speed index = reference / measured, 1.00 as fast as the reference, lower is "
        "slower. Busy and steal: shares of both cores' time during the part (/proc/stat); busy "
        "split between the benchmark's processes (the bot, its gpg runs, Synapse, Postfix, "
        "Dovecot, gpg-agents, the benchmark's own) and every other process on the machine. A "
        "measurement beside the figures, never used to correct them."
    )
    table = md_table(["part", "N", "start (UTC)", "s", "Python probe s", "gpg probe s",
                      "index around", "samples during, ms (min–median–max)", "index during",
                      "busy % (benchmark / others)", "steal %", "1-min load"],
                     rows)  # fmt: skip
    return f"{head}\n\n{table}"


def _samples(samples: list[float]) -> str:
    if not samples:
        return "–"
    ms = sorted(1000 * s for s in samples)
    return f"{len(ms)}: {ms[0]:.0f}–{statistics.median(ms):.0f}–{ms[-1]:.0f}"


def reference(count: int) -> dict[str, float]:
    """Medians of ``count`` probes, and the machine's shares meanwhile (for REFERENCE_*)."""
    prober = Prober.make(short_tempdir("cal"))
    try:
        stat = stat_snapshot()
        probes = [prober.probe() for _ in range(count)]
        samples = [python_work(SAMPLE_ROUNDS) for _ in range(count * 5)]
        shares = cpu_shares(stat, stat_snapshot())
    finally:
        prober.close()
    return {
        "python_s": statistics.median(p["python_s"] for p in probes),
        "gpg_s": statistics.median(p["gpg_s"] for p in probes),
        "sample_s": statistics.median(samples),
        "python_min": min(p["python_s"] for p in probes),
        "gpg_min": min(p["gpg_s"] for p in probes),
        "probe_wall_s": statistics.median(p["seconds"] for p in probes),
        "load": os.getloadavg()[0],
        **shares,
    }


if __name__ == "__main__":
    print(reference(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
