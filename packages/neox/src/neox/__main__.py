import sys

from neox.cli import main

sys.exit(main())
