"""`python -m ferryman` is the `ferryman` command."""

from ferryman.cli import main

raise SystemExit(main())
