"""``python -m training train|evaluate|tools ...``: see :mod:`training.cli`."""

import sys

from training.cli import main

sys.exit(main())
