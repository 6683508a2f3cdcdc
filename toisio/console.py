"""The terminal output of every CLI: user text is always printed as plain text.

Rich reads ``[...]`` in a string as markup, so a title or a notebook cell containing ``[/bold]``
would crash a command (or restyle what a handler reads).  Every console here has markup, emoji
codes and automatic highlighting turned off; styling is added only with :func:`styled`, never by
formatting user text into markup.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text


def make_console(*, stderr: bool = False, width: int = 140) -> Console:
    """A console that prints user text exactly as given (no markup, emoji or highlighting)."""
    stream_tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, width=None if stream_tty else width, markup=False, emoji=False,
                   highlight=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain parts and ``(text, style)`` pairs; no part is ever read as markup."""
    return Text.assemble(*parts)


def run_or_exit(fn, err: Console | None = None):
    """Run ``fn``; a :class:`~toisio.errors.ToisioError` is printed as ``refused (code): message`` and the
    command exits 1 (never a traceback for something the user can fix).  The one CLI error wrapper."""
    import typer

    from toisio.errors import ToisioError

    try:
        return fn()
    except ToisioError as exc:
        (err or make_console(stderr=True)).print(styled(("refused", "bold red"), f" ({exc.code}): {exc}"))
        raise typer.Exit(1) from None
