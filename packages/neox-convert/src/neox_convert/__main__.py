import sys

from neox_convert.cli import main

sys.exit(main())
