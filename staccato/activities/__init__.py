"""Temporal activities: all I/O of a transfer happens here.

Activities are plain (sync) functions so the worker can run them in a process pool:
parallel streams then use several cores instead of sharing one GIL.
"""

from collections.abc import Callable
from typing import Any

from staccato.activities.copy import copy_stream
from staccato.activities.dataset import (
    abort_batch_orphans,
    copy_batch,
    list_entries,
    sweep_leftovers,
)
from staccato.activities.dataset_fanout import compare_targets, copy_batch_to_many
from staccato.activities.staging import release_staged, stage_source
from staccato.activities.sync import sync_check
from staccato.activities.transfer import (
    cleanup,
    confirm_source,
    prepare,
    publish,
    stat,
    verify,
)

ALL_ACTIVITIES: list[Callable[..., Any]] = [
    stat,
    prepare,
    copy_stream,
    confirm_source,
    publish,
    verify,
    cleanup,
    sync_check,
    list_entries,
    copy_batch,
    stage_source,
    release_staged,
    copy_batch_to_many,
    compare_targets,
    abort_batch_orphans,
    sweep_leftovers,
]

__all__ = [
    "ALL_ACTIVITIES",
    "abort_batch_orphans",
    "cleanup",
    "compare_targets",
    "confirm_source",
    "copy_batch",
    "copy_batch_to_many",
    "copy_stream",
    "list_entries",
    "prepare",
    "publish",
    "release_staged",
    "stage_source",
    "stat",
    "sweep_leftovers",
    "sync_check",
    "verify",
]
