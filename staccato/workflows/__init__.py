"""Temporal workflows (deterministic; no I/O, no driver imports).

``TransferWorkflow`` is loaded on first use (PEP 562): a client that needs only
``staccato.workflows.search_attributes`` does not import the workflow code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from staccato.workflows.transfer import TransferWorkflow

__all__ = ["TransferWorkflow"]


def __getattr__(name: str) -> Any:
    if name == "TransferWorkflow":
        from staccato.workflows.transfer import TransferWorkflow

        return TransferWorkflow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
