"""``python -m neox_data``: the ``neox-data`` command."""

import sys

from neox_data.cli import main

if __name__ == "__main__":
    sys.exit(main())
