"""Turning a ``cmd`` / ``cmd_stop`` string into an argv, the way llama-swap does.

The rules (SPEC 2.2) in order:

1. lines whose first non-blank character is ``#`` are dropped (this happens before macro expansion,
   so the loader calls :func:`strip_comment_lines` on its own first);
2. a trailing backslash joins a line to the next one;
3. the text is split like POSIX shell words: quotes are respected, nothing else of the shell is
   (no ``#`` comments in the middle of a line, no variables, no globbing).
"""

from __future__ import annotations

import re
import shlex

# A backslash at the end of a line (trailing blanks forgiven: they are invisible in an editor)
# joins it to the next line. It becomes a space, as in llama-swap, so ``--flag \`` and ``--flag\``
# both continue with a new word.
_CONTINUATION = re.compile(r"\\[ \t]*\r?\n")


def strip_comment_lines(text: str) -> str:
    """``text`` without the lines whose first non-blank character is ``#``."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def split_command(text: str) -> list[str]:
    """Split a command string into argv words.

    Args:
        text: the command as written in the config (possibly several lines).

    Returns:
        The words; ``[]`` for a command that holds only blanks and comment lines.

    Raises:
        ValueError: on unbalanced quotes (the message is shlex's, e.g. "No closing quotation").
    """
    joined = _CONTINUATION.sub(" ", strip_comment_lines(text))
    lexer = shlex.shlex(joined, posix=True)
    lexer.whitespace_split = True
    # Comments are only whole lines (rule 1); a '#' inside a line is an ordinary character,
    # e.g. in "--prompt-prefix #".
    lexer.commenters = ""
    return list(lexer)
