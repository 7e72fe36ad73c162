import sys

from neox_eval.cli import main

sys.exit(main())
