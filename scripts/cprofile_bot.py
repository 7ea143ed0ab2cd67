"""``secir-bot`` under cProfile, timed by the main thread's CPU clock (a profiling aid).

    SECIR_BENCH_CPROFILE=DIR python scripts/bench.py --sizes 100 --parts burst --burst 150

makes the benchmark start every ``secir-bot run`` through this script; each writes
``DIR/<pid>.prof`` when it stops (read it with ``python -m pstats``). The clock is
``time.thread_time``: CPU of the event loop's thread, so a machine shared with gpg, Synapse
or other work does not show as time spent in whatever was waiting for the CPU (cProfile's
default wall clock does, and so does py-spy). Worker threads (fsyncs) are not profiled;
cProfile's own overhead weighs most on many small calls (the email package's parsers), so
read the shares as a guide and confirm a cut with the bot's CPU seconds in the benchmark.
"""

from __future__ import annotations

import cProfile
import os
import sys
import time
from pathlib import Path

from secir_bot.cli import main

if __name__ == "__main__":
    profile = cProfile.Profile(time.thread_time)
    code = 1
    profile.enable()
    try:
        code = main()
    finally:
        profile.disable()
        if "run" in sys.argv[1:]:
            out = Path(os.environ["SECIR_BENCH_CPROFILE"]) / f"{os.getpid()}.prof"
            profile.dump_stats(out)
    raise SystemExit(code)
