"""Text from outside Steadfast, made safe to print on a terminal.

Much of what the verbs print was written by someone else: a run's report by a model
that read pages anyone can write (a page can tell it what to write), a run's message
by an API's error, a topic by whoever wrote the manifest. Two things in such text
must not act on the terminal of whoever runs ``steadfast run --follow``, ``status``
or ``dev``:

* **Control characters.** ESC starts sequences that recolour, hide or rewrite what
  was printed, set the window's title, write the clipboard (OSC 52) or disguise a
  link (OSC 8); CR and backspace overwrite a line; BEL rings. They are shown as the
  visible symbols Unicode keeps for them (``␛``, ``␍``), so the reader sees that
  something was there and nothing acts. Line feeds and tabs stay; CR LF is a line feed.
* **Rich markup.** The verbs print through rich, which reads ``[bold]`` as markup: a
  topic such as ``Q3 [/bold] outlook`` stopped ``run``, ``status`` and ``dev`` with a
  ``MarkupError``, and ``[link=...]`` would disguise text. :func:`shown` escapes every
  bracket (rich's own ``escape`` leaves ``\\[`` before a non-tag to lose its backslash),
  and the console reads no ``:emoji:`` codes (:func:`steadfast_cli.display.console`).
  One case stays: outside text that ends in a backslash, put right before a closing
  tag, escapes that tag, which is then printed; nothing acts, and nothing fails.

Only what is printed changes: the report store keeps the report as the model wrote it.
"""

from __future__ import annotations

import re
from typing import Final

from rich.text import Text

from steadfast_contract.text import well_formed

_KEPT: Final = frozenset("\n\t")
#: A ``[`` and the backslashes right before it; what rich reads as a tag after it.
_BRACKET: Final = re.compile(r"(\\*)\[")
_TAG: Final = re.compile(r"\[[a-z#/@][^[]*?]")
_DEL: Final = 0x7F


def _picture(char: str) -> str:
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # the "control pictures" block: ␀ .. ␟
    if code == _DEL:
        return "\u2421"  # ␡
    return "\ufffd"  # a C1 control (U+0080..U+009F: CSI and OSC among them)


def _is_control(char: str) -> bool:
    code = ord(char)
    return char not in _KEPT and (code < 0x20 or _DEL <= code <= 0x9F)


def printable(text: str) -> str:
    """``text`` with every control character but line feed and tab made visible, and
    any lone surrogate (which stdout cannot encode) replaced by U+FFFD."""
    text = text.replace("\r\n", "\n")
    if any(_is_control(c) for c in text):
        text = "".join(_picture(c) if _is_control(c) else c for c in text)
    return well_formed(text)


def _escaped(match: re.Match[str]) -> str:
    # Rich turns n backslashes before a tag into n // 2 and, n odd, the tag into
    # text; before any other "[" it drops one backslash.
    written = len(match.group(1))
    tag = _TAG.match(match.string, match.end(1)) is not None
    return "\\" * (2 * written + 1 if tag else written + 1) + "["


def shown(text: object) -> str:
    """``text`` (an error, say: its ``str``) to put inside a rich markup string:
    printable, every bracket escaped."""
    return _BRACKET.sub(_escaped, printable(str(text)))


def cell(text: str, style: str = "") -> Text:
    """``text`` as a rich table cell: printable, never read as markup."""
    return Text(printable(text), style=style)
