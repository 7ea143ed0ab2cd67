"""``init``'s work lives in ``provision``, so the sandbox no longer imports the CLI.

The CLI starts the sandbox (``secir-bot sandbox``), and the sandbox used to import ``init``
from the CLI: an import circle. Checked in a fresh interpreter, where nothing is cached.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_sandbox_and_provision_do_not_import_the_cli() -> None:
    code = (
        "import sys, secir_bot.sandbox.world, secir_bot.provision; "
        "print('secir_bot.cli' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
