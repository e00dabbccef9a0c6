"""Temporal workflows (deterministic; no I/O, no driver imports)."""

from staccato.workflows.transfer import TransferWorkflow

__all__ = ["TransferWorkflow"]
