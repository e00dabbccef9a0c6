"""Search attributes Staccato sets on every transfer (all Keyword).

SQL visibility caps a Keyword value at 255 characters, so long URLs are shortened
(the full URLs are in the memo).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

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
