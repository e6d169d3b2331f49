"""Splitting command strings into argv."""

from __future__ import annotations

import pytest

from llama_swap_trio.config import split_command
from llama_swap_trio.config.cmdline import strip_comment_lines


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("srv --port 5800", ["srv", "--port", "5800"]),
        ("srv --prompt \"a  b\" 'c d'", ["srv", "--prompt", "a  b", "c d"]),
        ("srv \\\n  --a 1 \\\n  --b", ["srv", "--a", "1", "--b"]),
        ("srv \\  \n  --a", ["srv", "--a"]),  # blanks after the backslash are forgiven
        ("srv \\\n  # --gone \\\n  --kept", ["srv", "--kept"]),
        ("  # only\n\n", []),
        ("srv --tag #1", ["srv", "--tag", "#1"]),
        ('sh -c "echo $HOME; exit 1"', ["sh", "-c", "echo $HOME; exit 1"]),
        ("srv\n--next-line", ["srv", "--next-line"]),
    ],
)
def test_split_command(text: str, argv: list[str]) -> None:
    assert split_command(text) == argv


def test_unbalanced_quotes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="No closing quotation"):
        split_command('srv "open')


def test_strip_comment_lines_keeps_other_lines_verbatim() -> None:
    assert strip_comment_lines("a \\\n  # c\n  b # not\n#x") == "a \\\n  b # not"
