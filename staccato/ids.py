"""Transfer ids: the workflow id that is a destination's lock (and a dataset root's
lock id, :mod:`staccato.datasets.locks`).

Pure (no I/O, no clock), so the transfer workflow can call it inside Temporal's
sandbox to tell a canonical run from a front run (see :mod:`staccato.workflows.front`).
"""

from __future__ import annotations

import hashlib

from staccato.urls import parse_url

TRANSFER_ID_PREFIX = "staccato-"
#: the workflow type of a dataset's root lock (:mod:`staccato.datasets.locks`)
ROOT_LOCK_TYPE = "DatasetRootLockWorkflow"
#: id prefix shared with datasets (``staccato.datasets.models.DATASET_ID_PREFIX``)
LOCK_ID_PREFIX = "staccato-dataset-"


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


def root_lock_id(root: str) -> str:
    """The lock id of a canonical destination root (as in a request's
    ``destination_roots``): the id a dataset to that root alone has."""
    return LOCK_ID_PREFIX + hashlib.sha256(root.encode()).hexdigest()[:32]
