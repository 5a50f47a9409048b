"""The operator's logging: what ``--verbose`` adds, and what it never shows.

The operator reads whole Secrets: the ones an agent names, to say which key is
missing, and Temporal's credentials, to connect. ``kubernetes_asyncio`` logs every
response body it receives at DEBUG, so with DEBUG on for everything, each Secret's
data (API keys, the report store's DSN, the mTLS private key) would be in the
operator's log, a base64 decode away, and again at every credentials check. So
``--verbose`` turns DEBUG on for Kopf and the operator's own code, and the client
libraries that carry response bodies stay at INFO.
"""

from __future__ import annotations

import logging
from typing import Final

#: Loggers that write what the API server answered, Secrets included, at DEBUG.
BODY_LOGGERS: Final = ("kubernetes_asyncio",)
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(verbose: bool) -> None:
    """Log to stderr, at DEBUG when ``verbose``, never with a response body."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT)
    for name in BODY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if not verbose:
        # Kopf logs every successful timer tick at INFO: one line per agent per interval.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
