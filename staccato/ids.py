"""Transfer ids: the workflow id that is a destination's lock.

Pure (no I/O, no clock), so the transfer workflow can call it inside Temporal's
sandbox to tell a canonical run from a front run (see :mod:`staccato.workflows.front`).
"""

from __future__ import annotations

import hashlib

from staccato.urls import parse_url

TRANSFER_ID_PREFIX = "staccato-"


def transfer_id(destination: str) -> str:
    """The canonical transfer id (= workflow id) for a destination URL or path.

    ``staccato-`` + the first 32 hex digits of SHA-256 of the canonical destination:
    one id per destination object, so the id is the destination's lock, and no
    URL text (which may be long or private) lands in the id.

    Raises:
        InvalidURLError: ``destination`` is not a valid URL or path.
    """
    canonical = parse_url(destination).canonical
    return TRANSFER_ID_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:32]
