"""Text that every place a report goes can hold.

A model's reply is JSON, and JSON can carry characters that no report store, mail or
terminal takes: NUL (``\\u0000``, which a Postgres ``TEXT`` column refuses) and lone
UTF-16 surrogates (``\\ud800``, which UTF-8 cannot encode, so SQLite, SMTP and stdout
refuse them). A report holding one was paid for and then could not be saved: the
save retried as if the store were down until ``storage.saveTimeout``, and the run
failed with its report lost. A model writes them when a page it read tells it to,
or by accident.

:func:`well_formed` replaces each with U+FFFD, the character Unicode keeps for "a
character was here that could not be represented". The worker applies it where a
model's text becomes Steadfast's (``llm.text_of``, ``transcript.reply_text``), so
the report that is streamed, returned, saved and mailed is one and the same text.
"""

from __future__ import annotations

import re
from typing import Final

#: NUL, and any UTF-16 surrogate (in a Python str, one is always unpaired).
_UNHOLDABLE: Final = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT: Final = "\ufffd"


def well_formed(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (unchanged otherwise)."""
    if _UNHOLDABLE.search(text) is None:
        return text
    return _UNHOLDABLE.sub(REPLACEMENT, text)
