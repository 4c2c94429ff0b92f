"""`python -m execauth_core ...` is the `execauth` command."""

import sys

from .cli import main

sys.exit(main())
