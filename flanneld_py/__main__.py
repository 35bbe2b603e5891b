"""`python -m flanneld_py`: the same as the `flanneld-py` command."""

import sys

from flanneld_py.cli import main

sys.exit(main())
