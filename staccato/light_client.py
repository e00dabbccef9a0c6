"""The light client: a plain ``staccato cp`` / ``submit`` of one object, or ``cp -r`` /
``submit -r`` of a dataset to one destination root, through Temporal's HTTP API (the
frontend's grpc-gateway JSON), without loading Temporal's Python SDK (~0.4 s of a
command's start: its client, its Rust bridge, protobuf).

It makes only the calls a plain start makes when all goes as usual, and hands
everything else to the SDK's client (:class:`staccato.client.StaccatoClient`), whose
rules then apply unchanged:

* before the start, the visibility query for running writers that enclose the
  destination (:func:`staccato.overlaps.overlap_clauses`) and for any running
  transfer to the destination itself (its own, or one queued for it, which runs
  first: :func:`staccato.starts.queued_ahead`): any workflow listed, and the SDK's
  client decides (and names it);
* the start itself, exactly as :func:`staccato.starts.start_or_attach` makes it (same
  workflow type, id, task queue, policies, input, memo, search attributes, summary,
  priority; each payload's bytes as the SDK's data converter makes them, sent in the
  API's full form, ``noPayloadShorthand``): refused (the destination is busy, even by
  the identical request) or failed in any way, and the SDK's client starts, attaches or
  queues as it always does (a start that happened but whose answer was lost is
  attached to: the same request hash);
* the task queue's pollers (the "no worker" hint);
* ``cp -q``: the wait for the run's end (the history's close event, long-polled, runs
  followed as ``WorkflowHandle.result`` follows them): a completed transfer's status
  comes from its result (:func:`staccato.submissions.completed_status`); any other end
  is told by the SDK's client (:meth:`StaccatoClient.outcome`), as is a progress bar's
  or line's follow.

A dataset (:meth:`LightClient.start_dataset`; not with several roots or
``--retry-failed``): the same overlap query, also for writers inside the root; the
start as :func:`staccato.dataset_client.submit_dataset` makes it (memo, search
attributes and summary from :func:`staccato.dataset_requests.start_fields`, the
SDK's default priority). Its id is the root's lock id, so the start itself, with
``id_conflict_policy=FAIL``, is refused whenever anything holds the root (a dataset to
it, identical or not, or the lock of a dataset to several roots): the SDK's client
then attaches or says who holds it. ``cp -r -q`` waits as ``cp -q`` does, through
every run the dataset continues as; only a ``completed`` result it tells itself
(:func:`staccato.dataset_requests.status_from_result`), any other end
(``completed_with_errors``, failed, cancelled) the SDK's client
(:func:`staccato.dataset_client.await_dataset_end`).

When (:func:`light_client`): Temporal's HTTP API address is known
(``STACCATO_TEMPORAL_HTTP``, or the port ``staccato up``'s dev server recorded when
the Temporal address names that server: ``TEMPORAL_ADDRESS``, or by default that of the
``up`` running with this STACCATO_HOME); Temporal's connection configuration is plain
(no ``TEMPORAL_*`` variable but ``TEMPORAL_ADDRESS`` and ``TEMPORAL_NAMESPACE``, no
Temporal configuration file: no TLS, API key, profile or gRPC metadata); the payload
codec is off; the light client is allowed (``STACCATO_LIGHT_CLIENT``, default on); and
the start is immediate (``--not-before`` starts a front run: the SDK's). Otherwise the
command uses the SDK's client from the start, as before.

Calls: HTTP/1.1 over asyncio streams, one connection per call (loopback), so that
Ctrl-C or SIGTERM cancels a long poll at once (no thread left blocking the exit).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from staccato import run_fields, settings
from staccato.ids import root_lock_id, transfer_id
from staccato.models import TransferRequest, TransferResult, TransferState, TransferStatus
from staccato.overlaps import PAGE_SIZE, overlap_clauses, running_query, visibility_string
from staccato.submissions import Submission, completed_status

if TYPE_CHECKING:  # the dataset modules are imported by a dataset's calls only
    from staccato.datasets.models import DatasetRequest, DatasetStatus

M = TypeVar("M", bound=BaseModel)

#: ``TEMPORAL_*`` variables a plain connection may set (any other one: the SDK's client)
PLAIN_TEMPORAL_VARIABLES = frozenset({"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"})
#: seconds a call other than the long poll may take before the SDK's client takes over
CALL_TIMEOUT_S = 10.0
_CLOSE_EVENT = "HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT"


class HTTPAPIError(Exception):
    """Temporal's HTTP API answered a call with an error (``status``: the HTTP
    status; the message is Temporal's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _temporal_config_file() -> Path:
    """Where Temporal's environment configuration looks for its file by default
    (``$XDG_CONFIG_HOME`` or ``~/.config``, then ``temporalio/temporal.toml``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "temporalio" / "temporal.toml"


def plain_temporal_config() -> tuple[str, str] | None:
    """``(address, namespace)`` of the Temporal connection when its configuration is
    plain (see the module docstring); None when anything else could be configured
    (TLS, an API key, a profile, a configuration file, gRPC metadata), which only the
    SDK's client reads. The address: ``TEMPORAL_ADDRESS``, else
    :func:`staccato.settings.default_address` (the running ``up``'s of STACCATO_HOME,
    or the dev server a killed one left running, or a stopped ``up``'s, else
    ``127.0.0.1:7233``).

    Raises:
        SettingsError: no address is set and a STACCATO_* variable is invalid.
    """
    for name, value in os.environ.items():
        if name.startswith("TEMPORAL_") and value and name not in PLAIN_TEMPORAL_VARIABLES:
            return None
    if "TEMPORAL_NAMESPACE" in os.environ and not os.environ["TEMPORAL_NAMESPACE"]:
        return None
    if _temporal_config_file().exists():
        return None
    address = os.environ.get("TEMPORAL_ADDRESS") or settings.default_address()
    return address, os.environ.get("TEMPORAL_NAMESPACE") or settings.DEFAULT_NAMESPACE


def light_client(*, immediate: bool = True) -> LightClient | None:
    """A light client when it is safe to use one (see the module docstring), else None.

    Args:
        immediate: the start is now (not ``--not-before``).

    Raises:
        SettingsError: a STACCATO_* variable is invalid.
    """
    config = settings.current()
    if not immediate or not config.light_client:
        return None
    if config.codec_key is not None or config.codec_key_file is not None:
        return None
    plain = plain_temporal_config()
    if plain is None:
        return None
    address, namespace = plain
    if config.temporal_http:
        host, _, port = config.temporal_http.removeprefix("http://").rstrip("/").rpartition(":")
        return LightClient(host, int(port), namespace=namespace, task_queue=config.task_queue)
    host, _, grpc_port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not grpc_port.isdigit():
        return None
    from staccato.workers.devserver import recorded_http_port

    http_port = recorded_http_port(config.home, int(grpc_port))
    if http_port is None:
        return None
    return LightClient("127.0.0.1", http_port, namespace=namespace, task_queue=config.task_queue)


def _payload(data: bytes, **metadata: str) -> dict[str, Any]:
    """A payload in the HTTP API's full form (base64 metadata values and data)."""
    return {
        "metadata": {k: base64.b64encode(v.encode()).decode() for k, v in metadata.items()},
        "data": base64.b64encode(data).decode(),
    }


def converted(value: Any) -> dict[str, Any]:
    """``value`` as the SDK's pydantic data converter encodes it (``json/plain``,
    ``pydantic_core.to_json``: the same function, so the same bytes)."""
    from pydantic_core import to_json

    return _payload(to_json(value), encoding="json/plain")


def keyword_attribute(value: str) -> dict[str, Any]:
    """A Keyword search attribute's value as the SDK encodes a typed one (its default
    JSON converter: ``json.dumps`` compact, keys sorted; metadata ``type: Keyword``)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return _payload(text.encode(), encoding="json/plain", type="Keyword")


def _start_body(
    workflow_type: str,
    value: Any,
    *,
    task_queue: str,
    memo: dict[str, Any],
    search_attributes: dict[str, str],
    summary: str,
    priority: dict[str, Any],
) -> dict[str, Any]:
    """The body of a StartWorkflowExecution call as the SDK's client makes it for
    ``start_workflow`` with ``id_conflict_policy=FAIL``, ``id_reuse_policy=
    ALLOW_DUPLICATE``, a memo, Keyword search attributes and a static summary (its
    identity: ``<pid>@<host>``, the SDK's default)."""
    return {
        "workflowType": {"name": workflow_type},
        "taskQueue": {"name": task_queue},
        "input": {"payloads": [converted(value)]},
        "identity": f"{os.getpid()}@{socket.gethostname()}",
        "requestId": str(uuid.uuid4()),
        "workflowIdReusePolicy": "WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE",
        "workflowIdConflictPolicy": "WORKFLOW_ID_CONFLICT_POLICY_FAIL",
        "memo": {"fields": {k: converted(v) for k, v in memo.items()}},
        "searchAttributes": {
            "indexedFields": {
                name: keyword_attribute(value) for name, value in search_attributes.items()
            }
        },
        "userMetadata": {"summary": converted(summary)},
        "priority": priority,
    }


def _cleanup_settled(description: dict[str, Any]) -> bool:
    """Whether a failed run's clean-up (its pending ``cleanup`` activity, in a
    DescribeWorkflowExecution answer) is over or has failed its first attempt."""
    for pending in description.get("pendingActivities") or []:
        if (pending.get("activityType") or {}).get("name") == "cleanup":
            return int(pending.get("attempt") or 1) > 1 or bool(pending.get("lastFailure"))
    return True


def start_body(request: TransferRequest, *, task_queue: str) -> dict[str, Any]:
    """The body of the StartWorkflowExecution call that starts ``request``'s
    canonical run, field for field what :func:`staccato.starts.start_or_attach` has
    the SDK send."""
    return _start_body(
        run_fields.TRANSFER_TYPE,
        request,
        task_queue=task_queue,
        memo=run_fields.start_memo(request),
        search_attributes=run_fields.search_attributes(request, TransferState.scheduled),
        summary=run_fields.summary(request),
        priority={"priorityKey": request.options.priority},
    )


def dataset_start_body(request: DatasetRequest, *, task_queue: str) -> dict[str, Any]:
    """The body of the StartWorkflowExecution call that starts the dataset
    ``request``, field for field what :func:`staccato.dataset_client.submit_dataset`
    has the SDK send (no priority: the SDK's default, an empty one)."""
    from staccato.dataset_requests import start_fields

    fields = start_fields(request)
    return _start_body(
        run_fields.DATASET_TYPE,
        request,
        task_queue=task_queue,
        memo=fields.memo,
        search_attributes=fields.search_attributes,
        summary=fields.summary,
        priority={},
    )


def _body(raw: bytes, chunked: bool) -> bytes:
    """An HTTP/1.1 response body, de-chunked when ``chunked``."""
    if not chunked:
        return raw
    out = bytearray()
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            break
        out += raw[:size]
        raw = raw[size + 2 :]
    return bytes(out)


class LightClient:
    """Temporal's HTTP API at ``host:port``, for the calls of a plain start and wait
    (see the module docstring).

    Args:
        host: the HTTP API's host.
        port: its port.
        namespace: the Temporal namespace.
        task_queue: the workers' task queue.
    """

    def __init__(self, host: str, port: int, *, namespace: str, task_queue: str) -> None:
        self.host = host
        self.port = port
        self.namespace = namespace
        self.task_queue = task_queue

    def _path(self, *parts: str) -> str:
        return "/api/v1/namespaces/" + "/".join(quote(p, safe="") for p in (self.namespace, *parts))

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call (payloads in full form both ways); its JSON answer.

        Raises:
            HTTPAPIError: Temporal answered with an error.
            OSError: no connection (refused, reset).
        """
        params = {"noPayloadShorthand": "", **(query or {})}
        target = f"{path}?{urlencode(params)}"
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: application/json\r\nConnection: close\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(head.encode() + b"\r\n" + data)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        header, _, rest = raw.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        chunked = any(
            ln.lower().startswith("transfer-encoding:") and "chunked" in ln.lower()
            for ln in lines[1:]
        )
        answer = json.loads(_body(rest, chunked) or b"{}")
        if status != 200:
            raise HTTPAPIError(status, str(answer.get("message", answer)))
        return answer  # type: ignore[no-any-return]

    async def start(self, request: TransferRequest) -> Submission | None:
        """Start ``request``'s transfer (its canonical run); None when the SDK's
        client must start it instead (a running writer may enclose the destination,
        the destination is busy, or a call failed: see the module docstring)."""
        return await self._start(
            transfer_id(request.destination),
            request.destination,
            below=False,
            body=start_body(request, task_queue=self.task_queue),
            # any run to the destination (its transfer, or a transfer queued for it
            # that runs first: staccato.starts.queued_ahead): the SDK's client decides
            also=[
                f"{run_fields.DESTINATION} = {visibility_string(run_fields.keyword(request.destination))}"
            ],
        )

    async def start_dataset(self, request: DatasetRequest) -> Submission | None:
        """Start the dataset ``request`` to one destination root; None when the
        SDK's client must start it instead: several roots or ``--retry-failed`` (not
        a plain start), a running writer inside the root or enclosing it, anything
        under the dataset's id (the root's lock: a running dataset to that root alone,
        or the lock a dataset to several roots holds on it; the start, with
        ``id_conflict_policy=FAIL``, is refused), or a call failed."""
        from staccato.dataset_requests import request_id

        if request.destination_roots is not None or request.retry_failed is not None:
            return None
        workflow_id = request_id(request)
        if workflow_id != root_lock_id(request.destination_root):
            return None  # never so (one root's id is its lock's); else the SDK's check
        return await self._start(
            workflow_id,
            request.destination_root,
            below=True,
            body=dataset_start_body(request, task_queue=self.task_queue),
        )

    async def _start(
        self,
        workflow_id: str,
        target: str,
        *,
        below: bool,
        body: dict[str, Any],
        also: list[str] | None = None,
    ) -> Submission | None:
        """Ask visibility for running writers overlapping ``target`` (``below``: also
        inside it, a dataset's root) or matching a clause of ``also``, then, when none
        is listed, start ``body`` under ``workflow_id``; None when a writer is listed,
        the start is refused or a call fails."""
        try:
            _, enclosing, inside = overlap_clauses([target], below=below)
            query = running_query(enclosing + inside + (also or []))
            if query is not None:
                listed = await asyncio.wait_for(
                    self.call(
                        "GET",
                        self._path("workflows"),
                        query={"query": query, "pageSize": PAGE_SIZE},
                    ),
                    CALL_TIMEOUT_S,
                )
                if listed.get("executions"):
                    return None
            started = await asyncio.wait_for(
                self.call("POST", self._path("workflows", workflow_id), body=body),
                CALL_TIMEOUT_S,
            )
        except (HTTPAPIError, OSError, ValueError, TimeoutError):
            return None
        return Submission(workflow_id, str(started["runId"]))

    async def pollers(self) -> int:
        """How many workers recently polled the task queue for workflow tasks."""
        described = await asyncio.wait_for(
            self.call(
                "GET",
                self._path("task-queues", self.task_queue),
                query={"taskQueueType": "TASK_QUEUE_TYPE_WORKFLOW"},
            ),
            CALL_TIMEOUT_S,
        )
        return len(described.get("pollers") or [])

    async def completed(self, workflow_id: str, run_id: str) -> TransferStatus | None:
        """Wait for the transfer's run ``run_id`` of ``workflow_id`` to end (following
        the runs it continues as, as ``WorkflowHandle.result`` does); its status when
        it completed, None when it ended otherwise or the wait failed (the SDK's
        client then tells: :meth:`StaccatoClient.outcome`)."""
        waited = asyncio.ensure_future(self._result(workflow_id, run_id, TransferResult))
        failed = asyncio.ensure_future(self._failed_while_running(workflow_id, run_id))
        try:
            await asyncio.wait({waited, failed}, return_when=asyncio.FIRST_COMPLETED)
            if not waited.done():
                return None  # failed, its clean-up goes on: the SDK's client tells
            result = waited.result()
        finally:
            for task in (waited, failed):
                if not task.done():
                    task.cancel()
            await asyncio.gather(waited, failed, return_exceptions=True)
        return None if result is None else completed_status(workflow_id, result)

    async def _failed_while_running(self, workflow_id: str, run_id: str) -> None:
        """Return once the run records state ``failed`` (search attribute
        StaccatoState) while it still runs to remove its partial data, and that
        clean-up is not in its first attempt (:func:`staccato.client.final`'s rule; a
        describe every second); never while it runs otherwise, nor when a call fails."""
        while True:
            info: dict[str, Any] = {}
            try:
                answer = await asyncio.wait_for(
                    self.call(
                        "GET",
                        self._path("workflows", workflow_id),
                        query={"execution.runId": run_id},
                    ),
                    CALL_TIMEOUT_S,
                )
                info = answer.get("workflowExecutionInfo") or {}
                fields = (info.get("searchAttributes") or {}).get("indexedFields") or {}
                payload = fields.get(run_fields.STATE) or {}
                state = json.loads(base64.b64decode(payload.get("data") or "") or b"null")
            except (HTTPAPIError, OSError, ValueError, TypeError, TimeoutError):
                state = None
            running = info.get("status") == "WORKFLOW_EXECUTION_STATUS_RUNNING"
            if running and state == TransferState.failed.value and _cleanup_settled(answer):
                return
            if not running and state is not None:
                await asyncio.Event().wait()  # ended: the close event tells
            await asyncio.sleep(1.0)

    async def dataset_completed(self, workflow_id: str, run_id: str) -> DatasetStatus | None:
        """Wait for the dataset's run ``run_id`` of ``workflow_id`` to end (following
        the runs it continues as, one per page of work); its status when it completed
        with every file copied or up to date, None when it ended otherwise (with
        errors, failed, cancelled) or the wait failed (the SDK's client then tells:
        :func:`staccato.dataset_client.await_dataset_end`)."""
        from staccato.dataset_requests import status_from_result
        from staccato.datasets.models import DatasetResult, DatasetState

        result = await self._result(workflow_id, run_id, DatasetResult)
        if result is None or result.state != DatasetState.completed:
            return None
        return status_from_result(workflow_id, result)

    async def _result(self, workflow_id: str, run_id: str, result_type: type[M]) -> M | None:
        """Wait for the run ``run_id`` of ``workflow_id`` to end, following the runs
        it continues as (``WorkflowHandle.result``'s way); its result (a
        ``result_type``) when it completed, None when it ended otherwise or the wait
        failed."""
        try:
            while True:
                event = await self._close_event(workflow_id, run_id)
                kind = str(event.get("eventType", "")).removeprefix(
                    "EVENT_TYPE_WORKFLOW_EXECUTION_"
                )
                attributes: dict[str, Any] = next(
                    (v for k, v in event.items() if k.endswith("EventAttributes")), {}
                )
                following = attributes.get("newExecutionRunId")
                if following and kind in ("COMPLETED", "FAILED", "TIMED_OUT", "CONTINUED_AS_NEW"):
                    run_id = str(following)
                    continue
                if kind != "COMPLETED":
                    return None
                (payload,) = attributes["result"]["payloads"]
                encoding = base64.b64decode(payload["metadata"]["encoding"])
                if encoding != b"json/plain":
                    return None
                return result_type.model_validate_json(base64.b64decode(payload["data"]))
        except (HTTPAPIError, OSError, ValueError, KeyError, TypeError):
            return None

    async def _close_event(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        """The close event of a run, once it is there (long polls of the history)."""
        token: str | None = None
        while True:
            query = {
                "execution.runId": run_id,
                "waitNewEvent": "true",
                "historyEventFilterType": _CLOSE_EVENT,
                "skipArchival": "true",
            }
            if token:
                query["nextPageToken"] = token
            answer = await self.call(
                "GET", self._path("workflows", workflow_id, "history"), query=query
            )
            events = (answer.get("history") or {}).get("events") or []
            if events:
                return events[-1]  # type: ignore[no-any-return]
            token = answer.get("nextPageToken")
            if not token:
                raise ValueError(f"no close event for run {run_id} of {workflow_id}")
