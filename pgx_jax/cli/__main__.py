"""``python -m pgx_jax.cli``: the ``pgx-jax`` command."""

import sys

from pgx_jax.cli import main

sys.exit(main())
