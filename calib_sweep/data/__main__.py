"""``python -m calib_sweep.data``: see :mod:`calib_sweep.data.cli`."""

import sys

from calib_sweep.data.cli import main

sys.exit(main())
