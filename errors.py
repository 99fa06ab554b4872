"""Error types raised for bad user input.

Every error a user can cause (a malformed architecture string, a broken grammar
file, a hostile ONNX file, a bad dataset folder, an invalid option value) is one
of these. The command line catches :class:`EinnasError` once and prints its
message as a single line with exit status 2; library users catch the specific type.
"""

from __future__ import annotations


class EinnasError(Exception):
    """Base class of every error caused by user input."""


class GrammarError(EinnasError):
    """A grammar file that cannot be used: syntax, probabilities, unknown ops."""


class ArchitectureError(EinnasError):
    """An architecture string that does not parse or cannot work for an input shape."""


class PluginError(EinnasError):
    """A plugin that fails to import or registers an operation badly."""


class ModelError(EinnasError):
    """An ONNX file that cannot be read, is hostile, or is outside the limits."""


class DatasetError(EinnasError):
    """A dataset name or folder that cannot be used."""


class StudyError(EinnasError):
    """A study or storage that cannot be opened or does not match the search."""


class UsageError(EinnasError):
    """An option value that is out of range or inconsistent with another."""


class ConversionError(ModelError):
    """A readable ONNX file that cannot be converted to a torch module (unsupported op, shapes)."""
