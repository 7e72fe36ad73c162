"""``python -m neox_launch``: the ``neox-launch`` command."""

import sys

from neox_launch.cli import main

if __name__ == "__main__":
    sys.exit(main())
