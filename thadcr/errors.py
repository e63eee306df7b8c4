"""The errors thadcr raises on bad input or a run that cannot go on.

Every one of them carries a message that names the file, row or key and says what to do, so the
command line prints it without a traceback. `UsageError` marks a wrong command line or
configuration (exit status 2); any other `ThadcrError` is a failure at run time (exit status 1).
"""

from __future__ import annotations


class ThadcrError(Exception):
    """Base class: a message for the user, no traceback needed."""


class UsageError(ThadcrError, ValueError):
    """The command line or configuration asks for something invalid."""


class RunError(ThadcrError, RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""
