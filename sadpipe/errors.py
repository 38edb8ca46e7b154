"""User-facing errors: one line, non-zero exit, no traceback."""
import click


class UserError(click.ClickException):
    """Bad input from the user (a file, a field, a flag). Click prints ``Error: <message>``
    on one line and exits with status 1."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
