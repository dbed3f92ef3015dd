"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class UserError(Exception):
    """Bad input or a missing prerequisite the user can fix (no traceback is shown)."""
