"""Allow ``python -m secir_bot``."""

from secir_bot.cli import main

raise SystemExit(main())
