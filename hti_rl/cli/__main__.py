"""``python -m hti_rl.cli``: the ``hti-rl`` command."""

from hti_rl.cli.main import main

raise SystemExit(main())
