"""The build ID every Temporal ``Worker`` of Staccato reports.

Temporal's Python SDK defaults a worker's build ID to a hash of every module loaded,
which costs ~0.11 CPU-s at each worker start (the test suite starts ~225 workers).
Staccato uses no worker versioning, so the ID only names the code that ran a workflow
task, in the UI and in the histories' ``WorkflowTaskCompleted`` events: the release is
what a reader needs there.
"""

from __future__ import annotations

import importlib.metadata


def _build_id() -> str:
    """``staccato-<release>`` (``staccato-unknown`` when the package is not installed,
    e.g. run from a source tree without ``pip install``)."""
    try:
        return f"staccato-{importlib.metadata.version('staccato')}"
    except importlib.metadata.PackageNotFoundError:
        return "staccato-unknown"


#: the build ID of this process's workers (:func:`_build_id`)
BUILD_ID = _build_id()
