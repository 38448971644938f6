"""``python -m utcp``: the command line tools."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
