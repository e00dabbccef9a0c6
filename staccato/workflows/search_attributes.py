"""Search attributes Staccato sets on every transfer (all Keyword), as the SDK's typed
keys; their names, the value cut to fit and the memo are in :mod:`staccato.run_fields`
(free of the SDK).

SQL visibility caps a Keyword value at 255 characters, so long URLs are shortened
(the full URLs are in the memo).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

from staccato import run_fields
from staccato.run_fields import MAX_KEYWORD_CHARS, keyword, memo, start_memo

__all__ = [
    "ALL",
    "DESTINATION",
    "MAX_KEYWORD_CHARS",
    "SOURCE",
    "STATE",
    "keyword",
    "memo",
    "start_memo",
]

SOURCE = SearchAttributeKey.for_keyword(run_fields.SOURCE)
DESTINATION = SearchAttributeKey.for_keyword(run_fields.DESTINATION)
STATE = SearchAttributeKey.for_keyword(run_fields.STATE)
ALL = (SOURCE, DESTINATION, STATE)
