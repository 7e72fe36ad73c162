import sys

from neox_train.cli import main

sys.exit(main())
