"""The two ways a conversion refuses its input, both a `ValueError` the CLI reports in one line."""

from __future__ import annotations


class ConversionError(ValueError):
    """The input is not something this converter reads: not a model, files that disagree with
    their config, an architecture or feature that neox-model does not have."""


class ExportError(ConversionError):
    """The checkpoint cannot be expressed exactly in the target format."""
