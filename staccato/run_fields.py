"""What a transfer run carries besides its input, as plain values: the names of its
search attributes (all Keyword), their values cut to fit, its memo and the UI's
summary line. Pure, and free of Temporal's SDK, so that both clients (the SDK's
and the light one, :mod:`staccato.light_client`) and the workflows build them here.

SQL visibility caps a Keyword value at 255 characters, so long URLs are shortened
(the full URLs are in the memo).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from staccato.links import link_of, tuned_link

if TYPE_CHECKING:
    from staccato.models import TransferRequest, TransferState

#: the workflow type of a transfer (started by name: a client imports no workflow code)
TRANSFER_TYPE = "TransferWorkflow"
#: the workflow type of a dataset (``staccato cp -r``)
DATASET_TYPE = "DatasetWorkflow"

#: search attribute names: the source (redacted), the destination, the state
SOURCE = "StaccatoSource"
DESTINATION = "StaccatoDestination"
STATE = "StaccatoState"
ALL = (SOURCE, DESTINATION, STATE)
MAX_KEYWORD_CHARS = 255


def keyword(text: str) -> str:
    """``text`` cut to fit a Keyword search attribute (255 characters)."""
    if len(text) <= MAX_KEYWORD_CHARS:
        return text
    return text[: MAX_KEYWORD_CHARS - 1] + "…"


def search_attributes(request: TransferRequest, state: TransferState) -> dict[str, str]:
    """A transfer run's search attributes by name: its source, destination (each cut
    to fit) and ``state``."""
    return {
        SOURCE: keyword(request.source),
        DESTINATION: keyword(request.destination),
        STATE: state.value,
    }


def memo(request: TransferRequest) -> dict[str, Any]:
    """The memo of a transfer run: full URLs (the search attributes cut them at 255
    characters), the request hash (tells an identical request from a different one),
    chunk size (bytes) and streams. No secret: ``request.source`` has its query
    redacted. Pure: also used inside the workflow sandbox."""
    return {
        "source": request.source,
        "destination": request.destination,
        "request_hash": request.request_hash(),
        "chunk_size": request.options.chunk_size,
        "streams": request.options.streams,
    }


def start_memo(request: TransferRequest) -> dict[str, Any]:
    """The memo a client starts a transfer's run with: :func:`memo`, and ``tuning``:
    True for a tuned transfer (no ``--streams`` nor ``--chunk-size``), so ``status``
    of one that has not begun says the optimizer chooses both instead of showing the
    defaults it starts from (left out otherwise, and for a local copy, which is never
    tuned: :func:`staccato.links.tuned_link`; an untuned run's memo is as before;
    runs that workflows start, a fan-out's or dataset's, carry no such key: their
    status learns it from the ``progress`` query)."""
    started = memo(request)
    if runs_tuned(request):
        started["tuning"] = True
    elif rate_capped_untuned(request):
        started["untuned"] = UNTUNED_MAX_RATE
    return started


#: the start memo's ``untuned`` of a rate-capped copy (:func:`rate_capped_untuned`)
UNTUNED_MAX_RATE = "max_rate"


def rate_capped_untuned(request: TransferRequest) -> bool:
    """Whether ``request`` is a copy the client left untuned for its ``--max-rate``
    (:func:`staccato.cli.options.transfer_options`): a rate cap, no tuning, and the
    fixed default streams and chunk size (none given), on a tuned link (a local
    copy is never tuned anyway). ``status`` says so (its ``untuned``)."""
    from staccato.models import DEFAULT_CHUNK_SIZE, DEFAULT_STREAMS

    options = request.options
    return (
        options.max_rate is not None
        and not options.tuning
        and options.streams == DEFAULT_STREAMS
        and options.chunk_size == DEFAULT_CHUNK_SIZE
        and tuned_link(link_of(request.source, request.destination))
    )


def runs_tuned(request: TransferRequest) -> bool:
    """Whether ``request`` runs tuned: it asks for tuning (``options.tuning``) and its
    link is tuned (:func:`staccato.links.tuned_link`: not a local copy). What the start
    memo, ``schedule describe`` and ``status`` say of a run's tuning.

    Raises:
        InvalidURLError: a URL of ``request`` is not valid (:func:`staccato.links.link_of`).
    """
    return request.options.tuning and tuned_link(link_of(request.source, request.destination))


def summary(request: TransferRequest) -> str:
    """The UI's one-line summary: ``SOURCE -> DESTINATION`` (at most 200 characters)."""
    return f"{request.source} -> {request.destination}"[:200]
