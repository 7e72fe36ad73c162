import sys

from neox_eval.cli import main

code = main()
if "torch" in sys.modules:
    # a run that used torch (and perhaps a process group): finish without the C++ teardown
    from neox_model import exit_process

    exit_process(code)
sys.exit(code)
