"""Per-link tuning: the optimizer that picks a transfer's streams and chunk size.

Pure (no Temporal, no I/O, no clock): the transfer workflow feeds it what its
finished segments measured and applies what it decides; the link's memory
(:class:`LinkMemory`) is read before and written after a transfer by activities.

The approach is FTS3's (CERN's File Transfer Service optimizer): start mid-range,
step the number of streams up while the measured throughput improves by more than
:data:`GAIN` and errors stay rare, step back and hold after a drop or errors, and
probe again now and then. Throughput per setting is smoothed with an exponential
moving average (:data:`ALPHA`).

Measurement: a :class:`Window` sums the segments that started under the current
setting and finished: their bytes and the seconds each stream took (from start to
finish as the workflow saw it: scheduling, connection set-up and retries count).
Its aggregate rate is ``streams x bytes / stream_seconds`` (bytes/s): the mean rate of
one stream times the streams running. Under a per-connection cap ``c`` and an
aggregate cap ``C`` that is ``min(streams x c, C)``, and a server that refuses
connections past a limit shows up as errors and longer segments.

Since patch ``tune-wall-rate`` the workflow's windows come from a :class:`WallMeter`:
a setting is rated by what the link moved per second of workflow time while it ran
(``Window.seconds``: every segment that ran in the window counts for the part of its
own time inside it), not by the first segments to finish, which are not a fair
sample of it (the WAN bench's cold sweep rated 8 streams by the slow half of its
first wave and 12 looked 16-33 % better). Stream-seconds remain the measure of the
transfer's first window (not compared) and of the tail, where fewer streams run than
the setting.

Search (``sweep=False``, runs recorded before the sweep): start at
:data:`START_STREAMS`, the first step doubles the streams (4 -> 8); every later step
halves after a drop or a flat result, so the search narrows onto the knee (where one
more stream stops paying). Flat (within :data:`GAIN`) keeps the fewer streams: the same
throughput for less memory and fewer connections at the server.

Search with the sweep (``sweep=True``): a cold link starts at :data:`SWEEP_STREAMS`
(the middle of 1..16 streams: a window-limited long fat link needs many streams, and
every byte moved at too few of them is lost time the search cannot make up) and
sweeps up in steps of half the streams (8 -> 12 -> 16, a geometric step: doubling
from 8 would land on 16, far past a knee at 10) while each step gains more than
:data:`GAIN`. The first step that does not gain ends the sweep: a drop goes back to
the setting before it, a flat result keeps the fewer streams; from there the search
is FTS3's, with steps of an eighth of the streams (at least one), and its re-probes alternate up
and down, so a link whose best is few streams (loopback, a busy CPU) walks down
while throughput holds, a step at a time, never below a setting that measured
better by more than :data:`GAIN`. Errors end the sweep too (back-off, a ceiling). A
transfer that ends during the sweep leaves the link ``sweeping``: the next one goes
on from there.

The knee (``knee=True``, transfers started since patch ``tune-knee``): a step up
must pay, whether in the sweep or a re-probe: from ``a`` to ``b`` streams the total
must gain at least ``max(GAIN, SWEEP_EFFICIENCY x (b / a - 1))`` to go on climbing.
A step that pays less ends the climb where the measurements put the knee: the fewest
streams whose moving average is within :data:`GAIN` of the best measured (more
streams than that only lower the per-stream rate: more memory and connections for
noise). A gain too small for the streams added (8 -> 12 streams, +18 %) puts the knee
between them: the optimizer measures ``a x (1 + gain)`` streams (8 x 1.18 -> 9, where
``a``'s per-stream rate would carry ``b``'s total) before it settles. While holding,
when fewer streams measured within :data:`GAIN` of the best (adding streams stopped
raising the total), it steps down to them and keeps them unless they measure slower;
re-probes still try up later. A sweep that gained nothing above its start tries a
quarter fewer streams (not half: a probe below the knee costs while it is measured).
Before the patch, a small gain held the more streams (8 -> 12 at +18 %: 12), and only
a re-probe every :data:`REPROBE_EVERY` windows, one stream at a time, could walk down.

A CPU-bound window (transfers started since patch ``tune-cpu-busy``): each segment
reports how busy the worker host's CPUs were while it ran (the fraction of non-idle
time over all CPUs, ``/proc/stat``: :mod:`staccato.host_cpu`), and the window carries
their mean weighted by the segments' seconds. At :data:`CPU_SATURATED` or more, more
streams only split the same CPU among more streams (SSH in Python, a loopback link, a
machine busy with other work) and the windows' rates are noise (+-30 % on a busy
2-core worker, where a lucky window made a step up look like a gain: 12-16 streams to
SFTP, slower than 4). So the optimizer adds none: a probe up measured so settles on
the fewer streams, the cold sweep's first comparison tries a quarter fewer instead of
more (kept if within :data:`GAIN`), a held setting re-probes only downward (a step
down that keeps the rate within :data:`GAIN` is kept, never below
:data:`CPU_BOUND_FLOOR`), and a held window says why
(``CPU 97 % busy: more streams cannot help, holding 6``).

Near the copy's end (since patch ``tune-no-late-probe``): with less than
:data:`LATE_WINDOWS` windows' bytes left (``Window.bytes_left``) it holds: no probe
up, no re-probe, no step down to the knee. A probe there is measured on the tail,
where the streams run out of work (the WAN bench's last 512 MiB ran 241-258 MB/s
where its best fixed setting ran 382).

Bounds: :data:`MIN_STREAMS`..:data:`MAX_STREAMS` streams, chunk
:data:`MIN_CHUNK`..:data:`MAX_CHUNK`, and a worker's memory budget:
``streams x chunk x BUFFERS_PER_STREAM <= budget`` (a stream holds a chunk buffer and
may read it back into a second one).
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel, Field

from staccato import units
from staccato.models import DEFAULT_STREAMS, Segment
from staccato.models import MIN_TUNED_BYTES as MIN_TUNED_BYTES  # re-exported: the tuner's rule

MiB = 1024 * 1024
MIN_STREAMS = 1
MAX_STREAMS = 16
#: cold start: mid-range (runs recorded before the sweep)
START_STREAMS = 4
#: cold start of the sweep: the middle of MIN_STREAMS..MAX_STREAMS
SWEEP_STREAMS = 8
MIN_CHUNK = 4 * MiB
MAX_CHUNK = 64 * MiB
START_CHUNK = 16 * MiB
#: buffers of one chunk a stream holds at once (the chunk read, its read-back)
BUFFERS_PER_STREAM = 2
#: default worker memory budget for the streams' buffers (bytes)
DEFAULT_MEMORY_BUDGET = 2 * 1024 * MiB
#: an improvement smaller than this fraction is no improvement
GAIN = 0.05
#: a fall larger than this fraction is a drop
DROP = 0.10
#: failed attempts per segment above which the streams back off
ERROR_RATE = 0.10
#: weight of a new window in a setting's moving average
ALPHA = 0.5
#: with the sweep, its steps up are this fraction of the streams
SWEEP_DIVISOR = 2
#: the sweep goes on only while a step up pays at least this fraction of what its
#: streams would if each added one carried as much as those before (8 -> 12 streams:
#: +50 % streams, so a gain of at least +30 %)
SWEEP_EFFICIENCY = 0.6
#: after the sweep, steps (re-probes) are this fraction of the streams, at least one:
#: a probe past the knee costs while it is measured, a small one little
STEP_DIVISOR = 8
#: with the knee: a sweep that gained nothing above its start tries this fraction of
#: the streams fewer
KNEE_DOWN_DIVISOR = 4
#: decisions held before probing one step up again
REPROBE_EVERY = 6
#: a sweep that gained nothing above its start probes half the streams after this many
#: windows held
DOWN_AFTER = 3
#: a tuned transfer's segments are about this long (more of them: the streams can
#: change between them), at least two per stream allowed and at most :data:`MAX_SEGMENTS`
SEGMENT_BYTES = 64 * MiB
#: a warm link's segments last about this long for one stream at its remembered rate
#: (when that is more than :data:`SEGMENT_BYTES`): fewer, longer activities on a fast link
SEGMENT_SECONDS = 2.0
#: each segment is an activity (~6 history events): this bounds them per object
MAX_SEGMENTS = 256
#: a tuned plan's tail segments of at least this many chunks are cut in halves
TAPER_CHUNKS = 4
#: decisions kept in the log (state and memory stay small: Temporal payloads)
LOG_SIZE = 20
#: a window whose segments ran while the worker host's CPUs were at least this busy
#: (the fraction of non-idle CPU time, all CPUs) is CPU-bound: more streams only split
#: the same CPU, so the optimizer adds none (patch ``tune-cpu-busy``)
CPU_SATURATED = 0.9
#: CPU-bound, the optimizer steps down no lower than this many streams (the fixed
#: default's): a window's noise (+-30 %) let "no worse with fewer" walk a busy worker down
#: to 1-3 streams, and fewer streams than the worker's processes get less of a CPU that
#: other work competes for
CPU_BOUND_FLOOR = DEFAULT_STREAMS
#: with less left to copy than this many windows' bytes, the optimizer holds: a probe
#: there is measured on the tail, where streams run out of work (patch
#: ``tune-no-late-probe``)
LATE_WINDOWS = 2


class Window(BaseModel):
    """What the segments finished under one setting measured.

    Attributes:
        bytes: bytes the segments copied.
        stream_seconds: seconds the streams took, summed over the segments (> 0).
        segments: segments finished.
        errors: attempts among them that failed with an endpoint's error (retried).
        lost: attempts among them lost with their worker (killed, or its heartbeat
            timed out): not the link's doing, so not errors; their time holds the
            heartbeat timeout, so the window measures nothing.
        cpu_busy: the fraction (0..1) of the worker host's CPU time that was busy while
            the segments ran, their mean weighted by each one's seconds (the segments
            measure it, ``StreamResult.cpu_busy``); None: not measured (runs before
            patch ``tune-cpu-busy``, not Linux). At or above :data:`CPU_SATURATED` the
            optimizer adds no streams (the module doc).
        bytes_left: bytes of the object not yet copied when the window closed; None:
            not known (runs before patch ``tune-no-late-probe``). Less than
            :data:`LATE_WINDOWS` windows' bytes: the optimizer holds.
        seconds: workflow seconds from the window's opening to its closing (patch
            ``tune-wall-rate``, :class:`WallMeter`): then ``bytes`` is what the link
            moved in that time, ``stream_seconds`` the streams' seconds in it, and the
            rate is ``bytes / seconds``. None: the rate is
            ``streams x bytes / stream_seconds`` (runs before the patch, and a window
            in which streams ran out of work: the copy's tail).
    """

    bytes: int = Field(ge=0)
    stream_seconds: float = Field(gt=0)
    segments: int = Field(1, ge=1)
    errors: int = Field(0, ge=0)
    lost: int = Field(0, ge=0)
    cpu_busy: float | None = Field(None, ge=0, le=1)
    bytes_left: int | None = Field(None, ge=0)
    seconds: float | None = Field(None, gt=0)


class Span(NamedTuple):
    """One segment as the workflow saw it run, in workflow seconds (``workflow.now()``
    when its activity was scheduled and when its result was handled).

    Attributes:
        start: seconds (epoch) it was scheduled.
        end: seconds (epoch) its result came.
        length: its bytes.
        errors: its attempts that failed with an endpoint's error.
        lost: its attempts lost with a worker.
        cpu_busy: the host's busy CPU fraction it measured (0..1), if any.
    """

    start: float
    end: float
    length: int
    errors: int = 0
    lost: int = 0
    cpu_busy: float | None = None


class WallMeter:
    """What the link moved per second of workflow time while one setting ran (patch
    ``tune-wall-rate``): the workflow's windows since that patch.

    Why not stream-seconds: a window of the first ``max(2, ceil(streams / 2))``
    segments to finish rates a setting by those segments alone, and they are not a
    fair sample of it. The first of a setting's segments to finish are its quick ones
    (a step up to 12 streams was rated by its fast half), and the cold start's second
    window at 8 streams held the slow half of the first wave, start-up and all: on
    the WAN bench (profile B) that window measured 251-276 MiB/s while the link moved
    ~372, so 12 streams looked 16-33 % better and the search held 12, past the knee.
    Here every segment that ran in the window counts, slow or quick, for the part of
    its own time inside it.

    The window opens when the setting runs alone: at the first segment's start; after
    a decision that keeps the streams, where the last window closed (windows follow
    each other); after a change (more or fewer streams), when the last segment started
    before the decision ended; after the transfer's first window, when the last
    segment of the first wave ended (its start-up is in them). It closes at the
    earliest start of the segments still running (``known``): up to there, every
    segment that ran has ended and the workflow knows its time. Each segment's bytes
    count for the part of its own ``[start, end]`` inside ``[opened, known]`` (it is
    taken to move them evenly over its time: the workflow sees no more of it, and
    this replays). Once those bytes reach ``max(2, ceil(streams / 2))`` segments'
    worth (the old windows' size), the verdict::

        bytes   = sum(length x overlap / (end - start))   # each segment that ran in it
        seconds = known - opened                          # Window.seconds
        rate    = bytes / seconds

    A decision so comes about one segment's time after the bytes it rates moved, and
    a change of streams costs that time again before the next window opens (the old
    windows decided sooner, on half the streams' segments). The transfer's first
    window is not compared (:attr:`TuningState.warm_up`): it closes as before, on
    ``max(2, ceil(streams / 2))`` segments started in it, rated by their
    stream-seconds. A window in which a lane found no segment left to copy (the tail:
    fewer streams ran than the setting, and no more segments may come to fill it)
    closes once ``max(2, ceil(streams / 2))`` segments that ran in it ended, and is
    rated by stream-seconds too, ``streams x bytes / stream_seconds`` (:meth:`ran_out`). Errors count from the segments started
    in the window (``Window.segments``; one started while the last setting drained may
    have met its crowd), lost attempts from every segment that ran in it (a heartbeat
    timeout is then in its time). A pause or a segment that ended without
    its result (stopped, failed, copied again) discards the window (:meth:`reset`,
    :meth:`dropped`); the next opens at the next segment's start.

    All times are workflow seconds (``workflow.now()``), so the decisions replay.
    """

    def __init__(self) -> None:
        #: segment -> its start, of the segments running
        self.running: dict[int, float] = {}
        self.opened: float | None = None
        self.closing: float | None = None
        #: segments whose end opens the next window (started under another setting)
        self.waiting: set[int] = set()
        self.spans: list[Span] = []
        self.starved = False
        self.warm_up = False

    def started(self, index: int, now: float) -> None:
        """Segment ``index`` was scheduled at ``now`` under the current setting; a
        window opens if none is open and none waits."""
        self.running[index] = now
        if self.opened is None and not self.waiting:
            self.opened, self.spans = now, []

    def dropped(self, index: int) -> None:
        """Segment ``index`` ended without its result (stopped by a pause, failed, to
        be copied again): its bytes in the window are unknown, so is the window's."""
        self.running.pop(index, None)
        self.reset()

    def reset(self) -> None:
        """Discard the window (a pause, a segment ended without its result); the next
        opens at the next segment's start."""
        self.opened = self.closing = None
        self.waiting, self.spans = set(), []
        self.starved = self.warm_up = False

    def ran_out(self) -> None:
        """A lane found no segment left to copy: the rest of the copy runs fewer
        streams than the setting (rated by stream-seconds, see the class doc)."""
        self.starved = True

    def finished(self, index: int, span: Span, streams: int, *, warm_up: bool = False) -> bool:
        """Count segment ``index`` that ended at ``span.end`` under ``streams``
        streams. True: the window closed and its verdict is due (:meth:`window`, then
        :meth:`decided`). ``warm_up``: the window is the transfer's first, not compared
        (closed on its segments started in it, rated by their stream-seconds)."""
        self.running.pop(index, None)
        if self.waiting:
            self.waiting.discard(index)
            if not self.waiting:
                self.opened, self.spans = span.end, []
            return False
        if self.opened is None:
            return False
        opened = self.opened
        if span.end > opened or span.start >= opened:
            self.spans.append(span)
        wanted = max(2, (streams + 1) // 2)
        if warm_up or self.starved:
            # as before the patch: on the segments started in it (the first window),
            # or ended in it (the tail: no more may come to fill it)
            counted = [x for x in self.spans if x.start >= opened or not warm_up]
            if len(counted) < wanted:
                return False
            self.closing, self.warm_up = span.end, warm_up
            return True
        known = min(self.running.values(), default=span.end)
        if known <= opened or not self.spans:
            return False
        typical = sum(x.length for x in self.spans) / len(self.spans)
        if self._moved(opened, known) < wanted * typical:
            return False
        self.closing = known
        return True

    def _moved(self, lo: float, hi: float) -> float:
        """Bytes the spans moved between ``lo`` and ``hi`` (each evenly over its time)."""
        return sum(x.length * _share(x, lo, hi) for x in self.spans)

    def window(self, streams: int, bytes_left: int | None = None) -> Window | None:
        """The closed window (after :meth:`finished` said it closed); None when no time
        passed in it (a time-skipping test server)."""
        assert self.opened is not None and self.closing is not None
        lo, hi = self.opened, self.closing
        moved = inside = busy = busy_seconds = 0.0
        segments = errors = lost = 0
        for x in self.spans:
            share = _share(x, lo, hi)
            if share <= 0:
                continue
            overlap = max(0.0, min(x.end, hi) - max(x.start, lo))
            moved += x.length * share
            inside += overlap
            lost += x.lost  # its time (a heartbeat timeout) is in the window's
            if x.start >= lo:  # started under the setting alone: its errors are its
                segments += 1
                errors += x.errors
            if x.cpu_busy is not None and overlap > 0:
                busy += x.cpu_busy * overlap
                busy_seconds += overlap
        if inside <= 0 or hi <= lo:
            return None
        return Window(
            bytes=int(moved),
            stream_seconds=inside,
            segments=max(1, segments),
            errors=errors,
            lost=lost,
            cpu_busy=min(1.0, busy / busy_seconds) if busy_seconds > 0 else None,
            bytes_left=bytes_left,
            seconds=None if self.starved or self.warm_up else hi - lo,
        )

    def decided(self, now: float, before: int, after: int) -> None:
        """The optimizer decided at ``now`` to run ``after`` streams instead of
        ``before``: the next window opens where this one closed (the same streams), or
        once every segment running now ended (a change; after the first window, the
        segments of its first wave)."""
        closed, self.closing = self.closing, None
        if self.warm_up or after != before or closed is None:
            # after the first window held: its first wave; after a change: all
            first = self.opened if self.warm_up and after == before else None
            self.warm_up = False
            self.waiting = {
                i for i, start in self.running.items() if first is None or start <= first
            }
            self.spans = []
            self.opened = None if self.waiting else now
            return
        self.opened = closed
        self.spans = [x for x in self.spans if x.end > closed]


def _share(span: Span, lo: float, hi: float) -> float:
    """The part (0..1) of ``span``'s time between ``lo`` and ``hi`` (a span of no
    time: 1 inside, 0 outside)."""
    took = span.end - span.start
    if took <= 0:
        return 1.0 if lo <= span.start and span.end <= hi else 0.0
    return max(0.0, min(span.end, hi) - max(span.start, lo)) / took


class Decision(BaseModel):
    """One decision: the setting to run and why.

    Attributes:
        streams: streams to run from now.
        chunk_size: bytes per chunk (fixed once a transfer planned its segments).
        rate: the aggregate rate measured (bytes/s) that led to it; None at start.
        reason: in words, what was measured and why this setting follows.
    """

    streams: int
    chunk_size: int
    rate: float | None = None
    reason: str


class LinkMemory(BaseModel):
    """What a link remembers across transfers (kept in Temporal, see
    :mod:`staccato.workflows.link_tuning`).

    Attributes:
        link: ``SRC_ENDPOINT,DST_ENDPOINT``.
        streams: the streams the last transfer settled on.
        chunk_size: its chunk size (bytes).
        rate: its moving-average aggregate rate there (bytes/s).
        ceiling: streams that saw errors (not gone past before a re-probe), if any.
        transfers: tuned transfers recorded.
        reasons: the last decisions' reasons, newest last.
        sweeping: the last transfer ended before its sweep did: the next one sweeps on
            from ``streams`` (memories stored before the sweep: False).
        capped: the cap (streams) ``streams`` was learned under when the search ended
            at it (an endpoint or link limit, the worker's memory budget or streams at
            once): a transfer allowed more sweeps on from there (:func:`start`
            ``uncapped``); None: not bound by a cap (or stored before this field).
        cap_reason: what set ``capped``, in words.
    """

    link: str
    streams: int = Field(START_STREAMS, ge=MIN_STREAMS, le=MAX_STREAMS)
    chunk_size: int = Field(START_CHUNK, ge=MIN_CHUNK, le=MAX_CHUNK)
    rate: float | None = None
    ceiling: int | None = None
    transfers: int = 0
    reasons: list[str] = Field(default_factory=list)
    sweeping: bool = False
    capped: int | None = None
    cap_reason: str | None = None


class TuningState(BaseModel):
    """The optimizer's state for one transfer.

    Attributes:
        streams: streams running now.
        chunk_size: bytes per chunk.
        max_streams: the most streams allowed (bounds, memory budget, grants).
        pinned_streams: streams given by the user: never changed.
        step: streams added by the next probe up.
        previous: the setting the current one was probed from; None when holding.
        rates: moving-average aggregate rate (bytes/s) per streams setting.
        held: decisions held since the last probe.
        ceiling: streams that saw errors; probes stay below it.
        decisions: the last :data:`LOG_SIZE` decisions, newest last.
        sweeping: in the sweep (see the module doc): a gain steps up by half.
        alternate: re-probes alternate up and down (the search with the sweep);
            False: up only, as before it.
        down_next: the next re-probe goes down.
        warm_up: the next window is the transfer's first (with the sweep): not
            compared, its start-up in it.
        knee: a step up must pay for its streams to go on, and the optimizer settles
            on (and steps down to) the fewest streams within :data:`GAIN` of the best
            measured (the module doc); False: as before patch ``tune-knee``.
        bracket: the knee was put between these streams (fewer, more), and the next
            window measures the estimate between them; None: not searching for it.
        cap_reason: what bounds ``max_streams`` below :data:`MAX_STREAMS`, in words (the
            memory budget, the worker, a limit's grant); None: nothing does.
    """

    streams: int
    chunk_size: int
    max_streams: int
    pinned_streams: bool = False
    step: int
    previous: int | None = None
    rates: dict[int, float] = Field(default_factory=dict)
    held: int = 0
    ceiling: int | None = None
    decisions: list[Decision] = Field(default_factory=list)
    sweeping: bool = False
    alternate: bool = False
    down_next: bool = False
    warm_up: bool = False
    knee: bool = False
    bracket: tuple[int, int] | None = None
    cap_reason: str | None = None

    @property
    def last(self) -> Decision | None:
        """The newest decision."""
        return self.decisions[-1] if self.decisions else None


def streams_within_budget(chunk_size: int, budget: int) -> int:
    """The most streams whose buffers fit ``budget`` bytes (at least one).

    Args:
        chunk_size: bytes per chunk.
        budget: bytes of buffers a transfer may hold at once.
    """
    return max(MIN_STREAMS, min(MAX_STREAMS, budget // (chunk_size * BUFFERS_PER_STREAM)))


def segments_for(
    size: int, chunk_size: int, max_streams: int, memory: LinkMemory | None = None
) -> int:
    """How many segments a tuned transfer of ``size`` bytes is cut into: about
    :data:`SEGMENT_BYTES` each, at least two per stream allowed, at most
    :data:`MAX_SEGMENTS`, never more than its chunks.

    With ``memory`` holding a rate (a warm link, :func:`segment_bytes`), the
    segments are sized by time instead: about :data:`SEGMENT_SECONDS` of one stream
    at the remembered rate, at least one per remembered stream (so those start in one
    wave). Each segment is an activity whose start costs ~0.05-0.4 s (a workflow task,
    a task's dispatch); on a link a stream moves 200 MiB/s, 64 MiB segments spent a
    third of a 1 GiB copy's time starting: the default command ran 1.3-2.3x slower
    than 4 fixed streams on the loopback bench."""
    chunks = max(1, -(-size // chunk_size))
    sized = segment_bytes(memory)
    if sized is None:
        wanted = max(2 * max_streams, size // SEGMENT_BYTES)
    else:
        assert memory is not None
        wanted = max(min(memory.streams, max_streams), size // sized)
    return max(1, min(chunks, MAX_SEGMENTS, wanted))


def segment_bytes(memory: LinkMemory | None) -> int | None:
    """The bytes one stream moves in :data:`SEGMENT_SECONDS` at ``memory``'s rate
    (its aggregate rate over its streams), when that exceeds :data:`SEGMENT_BYTES`;
    None: a cold link, a memory without a rate, one whose sweep is not over (the sweep
    needs many segments), or a slow link (segments keep :data:`SEGMENT_BYTES`)."""
    if memory is None or memory.sweeping or not memory.rate or memory.rate <= 0:
        return None
    per_stream = memory.rate / max(1, memory.streams) * SEGMENT_SECONDS
    return int(per_stream) if per_stream > SEGMENT_BYTES else None


def taper(segments: list[Segment], size: int, chunk_size: int, lanes: int) -> list[Segment]:
    """The plan with a shorter tail: each of the last ``lanes`` segments of at least
    :data:`TAPER_CHUNKS` chunks is cut in halves, and the last ``lanes`` of those again,
    so the streams run out of work closer together (equal segments leave the last
    ones running alone for up to a whole segment's time, the link mostly idle). At
    most ``3 x lanes`` segments more (a 4 GiB object in 16 MiB chunks: 16 more; 1 GiB:
    none, its segments are short already).

    Args:
        segments: the plan (consecutive, in order, from ``plan_segments``).
        size: the object's bytes.
        chunk_size: bytes per chunk.
        lanes: streams that may run at once.
    """
    ranges = [(s.first_chunk, s.end_chunk) for s in segments]
    for _ in range(2):
        head, tail = ranges[: max(0, len(ranges) - lanes)], ranges[-lanes:] if lanes else []
        split: list[tuple[int, int]] = []
        for first, end in tail:
            if end - first >= TAPER_CHUNKS:
                middle = first + (end - first) // 2
                split += [(first, middle), (middle, end)]
            else:
                split.append((first, end))
        ranges = head + split
    out = []
    for index, (first, end) in enumerate(ranges):
        offset = first * chunk_size
        length = min(size, end * chunk_size) - offset
        out.append(
            Segment(index=index, first_chunk=first, end_chunk=end, offset=offset, length=length)
        )
    return out


def start(
    memory: LinkMemory | None,
    *,
    budget: int = DEFAULT_MEMORY_BUDGET,
    max_streams: int = MAX_STREAMS,
    streams: int | None = None,
    chunk_size: int | None = None,
    sweep: bool = False,
    knee: bool = False,
    max_streams_reason: str | None = None,
    uncapped: bool = False,
) -> tuple[TuningState, Decision]:
    """The first setting of a transfer.

    Cold (no memory): :data:`START_STREAMS` streams of :data:`START_CHUNK`, then
    probing up; with ``sweep``, :data:`SWEEP_STREAMS` and the sweep (module doc).
    Warm: the link's remembered setting, holding (small re-probes only); with
    ``sweep``, a link whose last transfer ended mid-sweep sweeps on from there.
    A user's ``streams`` or ``chunk_size`` wins over both and is never changed.

    Args:
        memory: what the link learned before, if anything.
        budget: bytes of stream buffers the transfer may hold (a worker's share).
        max_streams: the most streams that may run (a governor's grant, the streams
            a worker runs at once).
        streams: the user's ``--streams``, if given.
        chunk_size: the user's ``--chunk-size``, if given.
        sweep: search with the sweep (transfers started since patch ``tune-sweep``).
        knee: steps up must pay, and the optimizer settles on and steps down to the
            knee (transfers started since patch ``tune-knee``; the module doc).
        max_streams_reason: what set ``max_streams`` below :data:`MAX_STREAMS`, in
            words (shown when it bounds the streams: every decision has a reason).
        uncapped: with ``sweep``, a memory learned under a cap lower than this
            transfer's (``LinkMemory.capped``) sweeps on from its streams: the search
            that learned it was stopped by the cap, not by the link (tester75; patch
            ``tune-remember-uncapped``).
    """
    chunk = chunk_size or (memory.chunk_size if memory else START_CHUNK)
    fit = SWEEP_STREAMS if sweep and memory is None else START_STREAMS
    if chunk_size is None:
        chunk = min(max(chunk, MIN_CHUNK), MAX_CHUNK)
        # more memory per stream than the budget allows for even the start: smaller chunks
        while chunk > MIN_CHUNK and chunk * BUFFERS_PER_STREAM * fit > budget:
            chunk //= 2
    by_budget = streams_within_budget(chunk, budget)
    cap = max(MIN_STREAMS, min(max_streams, by_budget))
    why = cap_reason(cap, chunk, budget, by_budget, max_streams, max_streams_reason)
    up_to = f"{cap} ({why})" if why else f"{cap}"
    resumed = (
        uncapped
        and memory is not None
        and memory.capped is not None
        and cap > memory.capped
        and memory.streams >= memory.capped
    )
    if streams is not None:
        state = TuningState(
            streams=streams, chunk_size=chunk, max_streams=streams, pinned_streams=True, step=0
        )
        decision = Decision(streams=streams, chunk_size=chunk, reason="streams given by the user")
    elif memory is not None and sweep and (memory.sweeping or resumed):
        first = min(memory.streams, cap)
        state = TuningState(
            streams=first,
            chunk_size=chunk,
            max_streams=cap,
            step=max(1, first // 2),
            previous=0,
            ceiling=memory.ceiling,
            sweeping=True,
            alternate=True,
            warm_up=True,
        )
        decision = Decision(
            streams=first,
            chunk_size=chunk,
            rate=memory.rate,
            reason=(
                f"link memory: the last transfer ended mid-sweep at {units.counted(memory.streams, 'stream')}"
                f" x {units.size(chunk)}; sweeping on from {first}, up to {up_to}"
                if memory.sweeping
                else f"link memory: {units.counted(memory.streams, 'stream')} x {units.size(chunk)} learned "
                f"at most {memory.capped} ({memory.cap_reason or 'a cap'}); that cap is "
                f"gone: sweeping on from {first}, up to {up_to}"
            ),
        )
    elif memory is not None:
        first = min(memory.streams, cap)
        state = TuningState(
            streams=first,
            chunk_size=chunk,
            max_streams=cap,
            step=max(1, first // (STEP_DIVISOR if sweep else 4)),
            ceiling=memory.ceiling,
            # re-probe soon: the link may have changed since
            held=REPROBE_EVERY - 2,
            alternate=sweep,
        )
        decision = Decision(
            streams=first,
            chunk_size=chunk,
            rate=memory.rate,
            reason=(
                f"link memory: {units.counted(memory.streams, 'stream')} x {units.size(chunk)}"
                + (f" at {units.rate(memory.rate)}" if memory.rate else "")
                + (
                    f", capped at {cap} ({why or 'memory budget or grant'})"
                    if first < memory.streams
                    else (f", at most {up_to}" if why else "")
                )
            ),
        )
    elif sweep:
        first = min(SWEEP_STREAMS, cap)
        state = TuningState(
            streams=first,
            chunk_size=chunk,
            max_streams=cap,
            step=max(1, first // 2),
            previous=0,
            sweeping=True,
            alternate=True,
            warm_up=True,
        )
        decision = Decision(
            streams=first,
            chunk_size=chunk,
            reason=(
                f"cold start: {units.counted(first, 'stream')} x {units.size(chunk)}, sweeping up by half "
                f"the streams while it gains, up to {up_to}"
            ),
        )
    else:
        first = min(START_STREAMS, cap)
        state = TuningState(
            streams=first, chunk_size=chunk, max_streams=cap, step=first, previous=0
        )
        decision = Decision(
            streams=first,
            chunk_size=chunk,
            reason=f"cold start: {units.counted(first, 'stream')} x {units.size(chunk)}, probing up to {up_to}",
        )
    state.knee = knee and not state.pinned_streams
    state.cap_reason = why if not state.pinned_streams else None
    return _log(state, decision), decision


def observe(state: TuningState, window: Window) -> tuple[TuningState, Decision]:
    """Take one window measured under ``state.streams`` and decide the next setting.

    Returns:
        The new state and its decision (``decision.streams`` to run from now).
    """
    s = state.streams
    if window.lost and window.errors / window.segments <= ERROR_RATE:
        # a worker was lost: no verdict on the link either way, and no rate
        state = state.model_copy(deep=True)
        return _decide(
            state,
            s,
            state.rates.get(s) or 0.0,
            f"{window.lost} attempts lost with a worker in {window.segments} segments: "
            f"not the link's errors, not measured; holding {units.counted(s, 'stream')}",
        )
    rate = (
        window.bytes / window.seconds
        if window.seconds
        else window.bytes / window.stream_seconds * s
    )
    if state.warm_up and window.errors / window.segments <= ERROR_RATE:
        # the transfer's first window holds its start-up (processes, connections):
        # measured low, it would make any step up look like a gain
        state = state.model_copy(update={"warm_up": False}, deep=True)
        return _decide(
            state, s, rate, f"{units.rate(rate)} at {units.counted(s, 'stream')} in the first window (start-up "
            f"in it): not compared, measuring {s} again"
        )  # fmt: skip
    old = state.rates.get(s)
    ema = rate if old is None else ALPHA * rate + (1 - ALPHA) * old
    state = state.model_copy(update={"rates": {**state.rates, s: ema}}, deep=True)
    if state.pinned_streams:
        return _decide(state, s, ema, f"streams given by the user: {s} at {units.rate(ema)}")
    error_rate = window.errors / window.segments
    if window.errors and error_rate > ERROR_RATE:
        below = [k for k in state.rates if k < s]
        back = (
            max(below, key=lambda k: state.rates[k])
            if below
            else max(MIN_STREAMS, s - max(1, s // 4))
        )
        state.ceiling = s
        state.previous = None
        state.held = 0
        state.step = max(1, state.step // 2)
        state.sweeping = False
        state.bracket = None
        return _decide(
            state,
            back,
            ema,
            f"errors: {window.errors} failed attempts in {window.segments} segments at {s} "
            f"streams; back to {back} and holding",
        )
    cap = state.max_streams if state.ceiling is None else min(state.max_streams, state.ceiling - 1)
    busy = _saturated(window)
    late = _late(window)
    no_up = late or busy
    if state.knee and state.bracket is not None:  # the knee's estimate measured
        return _bracketed(state, ema, cap, no_up)
    if state.previous is not None:  # probing: compare with the setting probed from
        before = state.rates.get(state.previous)
        if before is None:  # the first window of a cold start
            if state.sweeping:
                state.step = max(1, s // SWEEP_DIVISOR)
            fewer = s - max(1, s // KNEE_DOWN_DIVISOR)
            if busy and not late and fewer >= CPU_BOUND_FLOOR:
                # CPU-bound from the start: fewer streams may carry as much (kept if so)
                state.previous = s
                state.held = 0
                state.sweeping = False
                state.step = max(1, fewer // STEP_DIVISOR)
                return _decide(
                    state,
                    fewer,
                    ema,
                    f"{units.rate(ema)} at {units.counted(s, 'stream')}, {busy}: trying {fewer}, kept if as fast",
                )
            return _probe_up(
                state, ema, cap, f"{units.rate(ema)} at {units.counted(s, 'stream')}", no_up
            )
        change = ema / before - 1 if before > 0 else 1.0
        said = (
            f"{units.rate(ema)} at {units.counted(s, 'stream')} vs {units.rate(before)} at "
            f"{state.previous} ({change:+.0%})"
        )
        if busy and s > state.previous:
            # a gain measured while the CPUs were saturated is the windows' noise: the
            # same CPU split among more streams (a busy 2-core worker: +-30 %)
            back = state.previous
            state.previous = None
            state.held = 0
            state.sweeping = False
            state.bracket = None
            state.step = max(1, back // STEP_DIVISOR)
            return _decide(state, back, ema, f"{said}: {busy}, back to {back}")
        if s < state.previous:  # a probe down (re-probes alternate): fewer if no worse
            if change >= -GAIN:
                state.previous = None
                state.held = 0
                state.step = max(1, s // STEP_DIVISOR)
                return _decide(state, s, ema, f"{said}: no worse with fewer, holding {s}")
            back = state.previous
            state.previous = None
            state.held = 0
            state.step = max(1, back // STEP_DIVISOR)
            return _decide(state, back, ema, f"{said}: fewer is slower, back to {back}")
        if state.knee:
            return _climb_or_settle(state, ema, cap, change, said, no_up)
        if change > GAIN and state.sweeping:
            paid = SWEEP_EFFICIENCY * (s / state.previous - 1) if state.previous else 0.0
            if change >= paid:
                state.step = max(1, s // SWEEP_DIVISOR)
                return _probe_up(state, ema, cap, said, no_up)
            # better, but the added streams carried little each: the knee is near
            state.previous = None
            state.held = 0
            state.sweeping = False
            state.step = max(1, s // STEP_DIVISOR)
            return _decide(state, s, ema, f"{said}: less than {paid:.0%}, sweep over, holding {s}")
        if change > GAIN:
            return _probe_up(state, ema, cap, said, no_up)
        back = state.previous if change < -DROP else min(state.previous, s)
        state.previous = None
        state.held = 0
        if state.sweeping:
            state.sweeping = False
            state.step = max(1, back // STEP_DIVISOR)
            why = "a drop" if change < -DROP else "no gain"
            if back == state.decisions[0].streams and back // 2 >= MIN_STREAMS:
                # no gain above the start: is half as good? (few streams suit some links)
                state.down_next = True
                state.held = REPROBE_EVERY - DOWN_AFTER
                state.step = max(1, back // 2)
            return _decide(state, back, ema, f"{said}: {why}, sweep over, holding {back}")
        state.step = max(1, state.step // 2)
        why = "a drop" if change < -DROP else "no gain"
        return _decide(state, back, ema, f"{said}: {why}, holding {back}")
    state.held += 1
    # the link changed under a held setting (it fell well below its best measured)
    best = max(state.rates.values())
    if ema < best * (1 - 2 * DROP) and state.held > 1 and state.knee and not no_up:
        # what the other settings measured is of the link before: forgotten, and a
        # sweep from here finds the knee again (a settle after it looks below too)
        better = max(state.rates, key=lambda k: state.rates[k])
        state.rates = {s: rate}
        state.sweeping = True
        state.down_next = False
        state.step = max(1, s // SWEEP_DIVISOR)
        return _probe_up(
            state,
            rate,
            cap,
            f"{units.rate(rate)} at {units.counted(s, 'stream')} is below the {units.rate(best)} measured at "
            f"{better} before: the link changed, those measurements forgotten, sweeping up",
        )
    if ema < best * (1 - 2 * DROP) and state.held > 1:
        better = max(state.rates, key=lambda k: state.rates[k])
        # (CPU-bound: only to fewer streams; near the end: not at all)
        if better != s and better <= cap and not late and (not busy or better < s):
            state.held = 0
            return _decide(
                state,
                better,
                ema,
                f"{units.rate(ema)} at {units.counted(s, 'stream')} is below the {units.rate(best)} measured "
                f"at {better}: trying {better}",
            )
    if state.knee and not late:
        fewer = _knee_of(state.rates, cap)
        if fewer < s:
            # adding streams stopped raising the total: fewer carry as much
            state.previous = s
            state.held = 0
            return _decide(
                state,
                fewer,
                ema,
                f"{units.rate(ema)} at {units.counted(s, 'stream')}, {_rates_text(state.rates)}: {fewer} "
                f"streams are within {GAIN:.0%} of the best, trying {fewer}",
            )
    if state.held >= REPROBE_EVERY and state.alternate and not late:
        # CPU-bound: re-probes go down only (fewer streams kept if as fast)
        down = state.down_next or bool(busy)
        state.down_next = not down
        floor = min(s, CPU_BOUND_FLOOR) if busy else MIN_STREAMS
        if down and s - max(1, state.step) >= floor:
            lower = s - max(1, state.step)
            state.previous = s
            held, state.held = state.held, 0
            return _decide(
                state,
                lower,
                ema,
                (f"{busy}; " if busy else "")
                + f"re-probing down after {held} windows held: trying {lower}",
            )
        if not down and s + max(1, state.step) <= cap:
            return _probe_up(state, ema, cap, f"re-probing after {state.held} windows held")
    elif state.held >= REPROBE_EVERY and not no_up and s + max(1, state.step) <= cap:
        return _probe_up(state, ema, cap, f"re-probing after {state.held} windows held")
    if no_up:
        return _decide(
            state,
            s,
            ema,
            f"{units.rate(ema)} at {units.counted(s, 'stream')}, {no_up}, holding {s}",
        )
    return _decide(state, s, ema, f"holding {units.counted(s, 'stream')} at {units.rate(ema)}")


def cap_reason(
    cap: int,
    chunk_size: int,
    budget: int,
    by_budget: int,
    max_streams: int,
    max_streams_reason: str | None,
) -> str | None:
    """What bounds a transfer at ``cap`` streams, in words; None when nothing below
    :data:`MAX_STREAMS` does.

    Args:
        cap: the most streams allowed (``min(max_streams, by_budget)``).
        chunk_size: bytes per chunk.
        budget: bytes of stream buffers the transfer may hold.
        by_budget: the streams ``budget`` holds (:func:`streams_within_budget`).
        max_streams: the other bound (the worker's streams at once, a connection cap).
        max_streams_reason: what set ``max_streams``, if known.
    """
    if cap >= MAX_STREAMS:
        return None
    if by_budget <= max_streams:
        return (
            f"the worker's memory budget {units.size(budget)} holds {by_budget} x "
            f"{BUFFERS_PER_STREAM} x {units.size(chunk_size)} chunks "
            "(STACCATO_WORKER_MEMORY_BYTES, STACCATO_TUNING_MEMORY_BYTES)"
        )
    return max_streams_reason or f"{units.counted(max_streams, 'stream')} allowed"


def remember(
    state: TuningState,
    link: str,
    memory: LinkMemory | None,
    *,
    held: bool = False,
    uncapped: bool = False,
) -> LinkMemory:
    """What ``link`` keeps from a transfer that ended in ``state``: the best setting
    measured below any that saw errors (the fewest streams within :data:`GAIN` of the
    best rate), its rate and the last reasons.

    With ``held`` (transfers started since patch ``tune-remember-held``): a transfer
    that ended holding a measured setting (not probing, bracketing or sweeping)
    keeps that setting and its rate, the one its last reasons end on. The optimizer
    holds a setting by its own comparisons (a probe down keeps the fewer streams
    within :data:`GAIN` of the setting it came from, whose average may since have
    drifted), so the best-of-all rule could name another: tester74's reasons ended
    "118.6 MiB/s at 3 streams ... no worse with fewer, holding 3" while ``staccato
    limit learned`` said "4 streams at 90.5 MiB/s".

    With ``uncapped`` (patch ``tune-remember-uncapped``): a transfer capped below what
    the link learned (``state.max_streams`` < ``memory.streams``: an endpoint or link
    limit's max-streams, the worker's memory budget or streams at once) measured only
    settings up to its cap, so the link keeps what it learned (a newcomer's link that
    learned 5 streams learned 1 under a ``--max-streams 2`` limit, and stayed there
    after the limit was removed: tester75). A transfer whose search ended at its cap
    records the cap (``capped``, ``cap_reason``): a later transfer allowed more
    sweeps on from there instead of holding.

    Returns:
        The link's new memory (``transfers`` counts this transfer either way).
    """
    transfers = (memory.transfers if memory else 0) + 1
    cap = state.max_streams
    if (
        uncapped
        and memory is not None
        and not state.pinned_streams
        and cap < memory.streams
        and (state.ceiling is None or state.ceiling > cap)
    ):
        return memory.model_copy(
            update={
                "transfers": transfers,
                "reasons": [d.reason for d in state.decisions[-4:]]
                + [
                    f"capped at {cap} ({state.cap_reason or 'a cap'}): the link keeps "
                    f"{units.counted(memory.streams, 'stream')} learned without that cap"
                ],
            }
        )
    # a setting that saw errors is not remembered, however fast it measured
    rates = {k: v for k, v in state.rates.items() if state.ceiling is None or k < state.ceiling}
    holding = (
        held
        and state.previous is None
        and state.bracket is None
        and not state.sweeping
        and state.streams in rates
    )
    if holding:
        streams, rate = state.streams, rates[state.streams]
    elif not rates:
        streams, rate = state.streams, None
    else:
        best = max(rates.values())
        streams = min(k for k, v in rates.items() if v >= best * (1 - GAIN))
        rate = rates[streams]
    return LinkMemory(
        link=link,
        streams=min(max(streams, MIN_STREAMS), MAX_STREAMS),
        chunk_size=min(max(state.chunk_size, MIN_CHUNK), MAX_CHUNK),
        rate=rate,
        ceiling=state.ceiling,
        transfers=transfers,
        reasons=[d.reason for d in state.decisions[-5:]],
        sweeping=state.sweeping,
        **(
            {"capped": cap, "cap_reason": state.cap_reason}
            if uncapped and not state.pinned_streams and cap < MAX_STREAMS and streams >= cap
            else {}
        ),
    )


def _saturated(window: Window) -> str:
    """Why ``window`` was CPU-bound (``CPU 97 % busy: more streams cannot help``), or
    "" when its segments did not measure the host's CPUs at or above
    :data:`CPU_SATURATED`."""
    if window.cpu_busy is None or window.cpu_busy < CPU_SATURATED:
        return ""
    return f"CPU {window.cpu_busy * 100:.0f} % busy: more streams cannot help"


def _late(window: Window) -> str:
    """Why no probe follows ``window`` near the copy's end (``300.0 MiB left, less than
    2 windows' worth: no probe``), or "" when more than :data:`LATE_WINDOWS` windows'
    bytes are left (or it is not known)."""
    if window.bytes_left is None or window.bytes_left >= LATE_WINDOWS * window.bytes:
        return ""
    return (
        f"{units.size(window.bytes_left)} left, less than {LATE_WINDOWS} windows' worth: no probe"
    )


def _knee_of(rates: dict[int, float], cap: int) -> int:
    """The fewest streams at most ``cap`` whose rate is within :data:`GAIN` of the best
    measured there (``cap`` when none was measured)."""
    measured = {k: v for k, v in rates.items() if k <= cap}
    if not measured:
        return cap
    best = max(measured.values())
    return min(k for k, v in measured.items() if v >= best * (1 - GAIN))


def _rates_text(rates: dict[int, float]) -> str:
    """``measured 8: 300.0 MiB/s, 12: 310.0 MiB/s`` (streams: moving average)."""
    return "measured " + ", ".join(f"{k}: {units.rate(rates[k])}" for k in sorted(rates))


def _climb_or_settle(
    state: TuningState, ema: float, cap: int, change: float, said: str, no_up: str = ""
) -> tuple[TuningState, Decision]:
    """With the knee: the verdict on a step up from ``state.previous`` to
    ``state.streams`` that changed the total by ``change`` (a fraction); ``no_up``:
    why no further step up follows (it holds instead), if any."""
    a, b = state.previous or 1, state.streams
    added = b / a - 1
    paid = max(GAIN, SWEEP_EFFICIENCY * added)
    if change >= paid and change > GAIN:
        if state.sweeping:
            state.step = max(1, b // SWEEP_DIVISOR)
        return _probe_up(state, ema, cap, f"{said}: pays for +{added:.0%} streams", no_up)
    said = f"{said}: less than the +{paid:.0%} that +{added:.0%} streams must pay"
    if change > GAIN and b - a >= 2:
        # a gain, but the added streams carried little each: the knee is between a and b,
        # near the streams at which a's per-stream rate would carry b's total
        knee = min(b - 1, max(a + 1, int(a * (1 + change) + 0.5)))
        state.previous = None
        state.held = 0
        state.sweeping = False
        state.bracket = (a, b)
        return _decide(
            state, knee, ema, f"{said}, the knee is near {a} x {1 + change:.2f}: measuring {knee}"
        )
    return _settle(state, ema, cap, said)


def _bracketed(
    state: TuningState, ema: float, cap: int, no_up: str = ""
) -> tuple[TuningState, Decision]:
    """With the knee: the verdict on the knee's estimate ``state.streams`` between
    ``state.bracket``. Carrying as much per stream as the fewer streams did, it is
    below the knee: the more streams are measured afresh (their one window was low:
    noise on a link that keeps scaling; not when ``no_up`` says why not), else the
    optimizer settles."""
    assert state.bracket is not None
    (a, b), s = state.bracket, state.streams
    state.bracket = None
    said = f"{units.rate(ema)} at {units.counted(s, 'stream')}"
    before = state.rates.get(a)
    if before and ema >= before * s / a * (1 - GAIN) and s < b <= cap and not no_up:
        state.rates.pop(b, None)
        state.previous = s
        state.held = 0
        state.step = b - s
        return _decide(
            state,
            b,
            ema,
            f"{said}, as much a stream as at {a} ({units.rate(before / a)}): the knee is "
            f"above {s}, measuring {b} afresh",
        )
    return _settle(state, ema, cap, said)


def _settle(state: TuningState, ema: float, cap: int, said: str) -> tuple[TuningState, Decision]:
    """With the knee: hold the fewest streams within :data:`GAIN` of the best measured;
    when none fewer was measured yet, try a quarter fewer after :data:`DOWN_AFTER`
    windows (few streams suit some links)."""
    target = _knee_of(state.rates, cap)
    state.previous = None
    state.held = 0
    state.sweeping = False
    state.bracket = None
    state.step = max(1, target // STEP_DIVISOR)
    fewer = max(1, target // KNEE_DOWN_DIVISOR)
    if not any(k < target for k in state.rates) and target - fewer >= MIN_STREAMS:
        state.down_next = True
        state.held = REPROBE_EVERY - DOWN_AFTER
        state.step = fewer
    return _decide(
        state,
        target,
        ema,
        f"{said}; {_rates_text(state.rates)}: holding {target}, the fewest streams within "
        f"{GAIN:.0%} of the best",
    )


def _probe_up(
    state: TuningState, ema: float, cap: int, said: str, no_up: str = ""
) -> tuple[TuningState, Decision]:
    """One step up from ``state.streams`` (at most ``cap``), to be compared with it;
    with ``no_up`` (why not: the CPUs saturated, the copy near its end) it holds."""
    s = state.streams
    if no_up:
        state.previous = None
        state.held = 0
        state.bracket = None
        if state.knee or state.sweeping:
            state.sweeping = False
            state.step = max(1, s // STEP_DIVISOR)
        return _decide(state, s, ema, f"{said}: {no_up}, holding {s}")
    step = max(1, state.step)
    nxt = min(cap, s + step)
    if nxt <= s:
        state.previous = None
        state.held = 0
        if state.knee:  # the sweep is over, and re-probes step by an eighth
            state.sweeping = False
            state.step = max(1, s // STEP_DIVISOR)
        return _decide(state, s, ema, f"{said}: at the most streams allowed ({cap}), holding")
    state.previous = s
    state.held = 0
    return _decide(state, nxt, ema, f"{said}: trying {nxt}")


def _decide(
    state: TuningState, streams: int, rate: float, reason: str
) -> tuple[TuningState, Decision]:
    state.streams = streams
    decision = Decision(streams=streams, chunk_size=state.chunk_size, rate=rate, reason=reason)
    return _log(state, decision), decision


def _log(state: TuningState, decision: Decision) -> TuningState:
    state.decisions = [*state.decisions, decision][-LOG_SIZE:]
    return state
