"""Chunk and segment planning: pure functions, used by the workflow and activities.

A transfer of ``size`` bytes is cut into chunks of ``chunk_size`` (the last one
shorter); consecutive chunks are grouped into segments, one stream activity each.
Segments are capped in length so that the number of activities stays small for
the workflow history (each costs ~4-6 events; Temporal's history limit is 51,200
events) while a segment remains a unit that can finish in reasonable time.
"""

from __future__ import annotations

from staccato.models import GiB, Segment

MAX_SEGMENT_BYTES = 64 * GiB


def chunk_count(size: int, chunk_size: int) -> int:
    """Number of chunks of ``chunk_size`` bytes covering ``size`` bytes (0 for 0)."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    return -(-size // chunk_size)


def chunk_bounds(index: int, size: int, chunk_size: int) -> tuple[int, int]:
    """``(offset, length)`` of chunk ``index`` in bytes."""
    offset = index * chunk_size
    return offset, max(0, min(chunk_size, size - offset))


def plan_segments(
    size: int, chunk_size: int, streams: int, max_segment_bytes: int = MAX_SEGMENT_BYTES
) -> list[Segment]:
    """Split ``size`` bytes into at most ``streams`` segments (more if a segment would
    exceed ``max_segment_bytes``), each a run of whole chunks.

    Returns:
        The segments in order; empty for a 0-byte object.
    """
    chunks = chunk_count(size, chunk_size)
    if chunks == 0:
        return []
    per_segment = -(-chunks // max(1, streams))
    per_segment = max(1, min(per_segment, max_segment_bytes // chunk_size))
    segments: list[Segment] = []
    first = 0
    while first < chunks:
        end = min(chunks, first + per_segment)
        offset = first * chunk_size
        length = min(size, end * chunk_size) - offset
        segments.append(
            Segment(
                index=len(segments), first_chunk=first, end_chunk=end, offset=offset, length=length
            )
        )
        first = end
    return segments
