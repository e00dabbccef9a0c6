"""Search attributes Staccato sets on every transfer (all Keyword).

SQL visibility caps a Keyword value at 255 characters, so long URLs are shortened
(the full URLs are in the memo).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio.common import SearchAttributeKey

if TYPE_CHECKING:
    from staccato.models import TransferRequest

SOURCE = SearchAttributeKey.for_keyword("StaccatoSource")
DESTINATION = SearchAttributeKey.for_keyword("StaccatoDestination")
STATE = SearchAttributeKey.for_keyword("StaccatoState")
ALL = (SOURCE, DESTINATION, STATE)
MAX_KEYWORD_CHARS = 255


def keyword(text: str) -> str:
    """``text`` cut to fit a Keyword search attribute (255 characters)."""
    if len(text) <= MAX_KEYWORD_CHARS:
        return text
    return text[: MAX_KEYWORD_CHARS - 1] + "…"


def memo(request: TransferRequest) -> dict[str, Any]:
    """The memo of a transfer run: full URLs (the search attributes cut them at 255
    characters), the request hash (tells an identical request from a different one),
    chunk size (bytes) and streams. No secret: ``request.source`` has its query
    redacted. Pure: also used inside the workflow sandbox."""
    return {
        "source": request.source,
        "destination": request.destination,
        "request_hash": request.request_hash(),
        "chunk_size": request.options.chunk_size,
        "streams": request.options.streams,
    }
