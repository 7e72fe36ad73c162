"""configs/neox_arguments.md is the generated key reference, and it is up to date."""

import subprocess
import sys
from pathlib import Path

from neox_train.config.key_reference import markdown

REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "neox_arguments.md"
REGENERATE = "neox-train keys --markdown > configs/neox_arguments.md"


def test_the_key_reference_is_up_to_date():
    assert REFERENCE.read_text() == markdown(), f"configs/neox_arguments.md is stale: {REGENERATE}"


def test_the_command_writes_the_reference():
    out = subprocess.run(
        [sys.executable, "-m", "neox_train", "keys", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == REFERENCE.read_text()


def test_every_key_is_in_the_reference():
    from neox_train import IGNORED_KEYS, UNSUPPORTED_KEYS, all_keys
    from neox_train.config.gpt_neox import LEGACY_KEYS

    text = REFERENCE.read_text()
    for key in [*all_keys(), *IGNORED_KEYS, *UNSUPPORTED_KEYS, *LEGACY_KEYS]:
        assert f"`{key}`" in text, key
    assert "| `optimizer.params.lr` | float | `required` | Peak learning rate. |" in text
