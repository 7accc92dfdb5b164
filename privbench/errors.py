"""Errors a user sees as one line, with exit code 2 and no traceback."""

from __future__ import annotations

import click


class PrivbenchError(click.ClickException):
    """A problem with what the user asked for: printed as one line, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: D102 - one line, no usage banner
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class PluginError(PrivbenchError):
    """A plugin is broken: duplicate name, misspelt hook, bad registration."""


def accepted(names) -> str:
    """The list of accepted names, for error messages."""
    names = sorted(names)
    return ", ".join(names) if names else "(none registered)"


class NotApplicable(Exception):
    """Raised by an attack that finds, only once it holds the protection, that it cannot run
    against it (e.g. a block-wise fit of an encoder without blocks); the matrix stores the cell as
    ``not-applicable`` with this message as its reason."""
