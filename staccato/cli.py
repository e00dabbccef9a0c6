"""The ``staccato`` command.

Exit codes: 0 success; 1 a transfer failed or was cancelled, or a service error
(Temporal unreachable, destination busy); 2 a usage error (bad option or URL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

if not sys.stderr.isatty():
    # Plain usage errors when piped or logged (no boxes drawn at 80 columns).
    os.environ.setdefault("TYPER_USE_RICH", "0")

import typer  # noqa: E402
from pydantic import ByteSize, TypeAdapter, ValidationError

from staccato import settings
from staccato.client import (
    DestinationBusy,
    StaccatoClient,
    TemporalUnavailable,
    TransferNotFound,
)
from staccato.errors import InvalidURL, StaccatoError
from staccato.models import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_RETRY_FOR_S,
    DEFAULT_STREAMS,
    MAX_CHUNK_SIZE,
    MAX_RETRY_FOR_S,
    MAX_STREAMS,
    ChecksumAlgorithm,
    TransferOptions,
    TransferState,
    TransferStatus,
    VerifyMode,
)
from staccato.urls import redact

app = typer.Typer(
    name="staccato",
    help=(
        "Staccato moves files between file://, http(s)://, s3:// and sftp:// endpoints as "
        "durable, resumable transfers on Temporal.\n\n"
        "Start the service with `staccato up --detach`, then `staccato cp SOURCE DESTINATION`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
T = TypeVar("T")
_SIZE = TypeAdapter(ByteSize)
_TERMINAL = (TransferState.completed, TransferState.failed, TransferState.cancelled)


def parse_size(text: str | int) -> int:
    """Parse a byte size: ``8388608``, ``8MiB``, ``64M`` (= 64 MiB, as in rclone and dd),
    ``1.5GiB``, ``100MB`` (decimal, 10^6).

    Raises:
        typer.BadParameter: not a size, or below 1 byte / above 5 GiB.
    """
    cleaned = str(text).strip()
    cleaned = re.sub(r"(?i)^([\d.]+)\s*([kmgt])$", lambda m: f"{m.group(1)}{m.group(2)}iB", cleaned)
    try:
        value = int(_SIZE.validate_python(cleaned))
    except ValidationError:
        raise typer.BadParameter(
            f"{text!r} is not a size; use bytes or a unit, e.g. 8MiB, 64M, 1GiB"
        ) from None
    if value < 1:
        raise typer.BadParameter(f"{text!r}: the chunk size must be at least 1 byte")
    if value > MAX_CHUNK_SIZE:
        raise typer.BadParameter(f"{text!r}: the chunk size must be at most 5GiB")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float) -> float:
    """Parse a duration in seconds: ``90`` or ``90s``, ``30m``, ``24h``, ``2d``, ``1.5h``.

    Raises:
        typer.BadParameter: not a duration, or outside 1 s .. 30 days.
    """
    cleaned = str(text).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", cleaned)
    if not match:
        raise typer.BadParameter(
            f"{text!r} is not a duration; use a number and a unit: 90s, 30m, 24h, 2d"
        )
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if not 1 <= seconds <= MAX_RETRY_FOR_S:
        raise typer.BadParameter(f"{text!r}: the duration must be between 1s and 30d")
    return seconds


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"staccato: error: {message}", err=True)
    raise typer.Exit(code)


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning Staccato errors into messages and exit codes."""
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except InvalidURL as err:
        _fail(str(err), EXIT_USAGE)
    except (TemporalUnavailable, DestinationBusy, TransferNotFound, StaccatoError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted", 130)


ChunkSizeOption = Annotated[
    int,
    typer.Option(
        "--chunk-size",
        parser=parse_size,
        metavar="SIZE",
        help="Bytes per chunk, the unit of copy, checksum and checkpoint: 8MiB, 64M (=MiB), 100MB.",
    ),
]
StreamsOption = Annotated[
    int,
    typer.Option(
        "--streams", min=1, max=MAX_STREAMS, help="Parallel streams (activities) copying chunks."
    ),
]
VerifyOption = Annotated[
    VerifyMode,
    typer.Option(
        "--verify",
        help="checksum: read each written chunk back and compare CRC32C/SHA-256 with the "
        "source's before publishing (S3: the stored checksum after); size: compare sizes; "
        "none.",
    ),
]
ChecksumOption = Annotated[
    ChecksumAlgorithm, typer.Option("--checksum", help="Chunk checksum: crc32c (fast) or sha256.")
]
RetryForOption = Annotated[
    float,
    typer.Option(
        "--retry-for",
        parser=parse_duration,
        metavar="DURATION",
        help="Keep retrying transient failures (an endpoint down, a worker gone) for this "
        "long without progress before failing: 90s, 30m, 24h, 2d.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TransferArg = Annotated[
    str, typer.Argument(help="Transfer id, or the destination URL/path.", metavar="TRANSFER")
]


def _options(
    chunk_size: int,
    streams: int,
    verify: VerifyMode,
    checksum: ChecksumAlgorithm,
    retry_for: float = DEFAULT_RETRY_FOR_S,
) -> TransferOptions:
    return TransferOptions(
        chunk_size=chunk_size,
        streams=streams,
        verify=verify,
        checksum=checksum,
        retry_for_s=retry_for,
    )


@app.command()
def submit(
    source: Annotated[str, typer.Argument(help="Source URL or path.", metavar="SOURCE")],
    destination: Annotated[
        str,
        typer.Argument(help="Destination URL or path (the file to write).", metavar="DESTINATION"),
    ],
    chunk_size: ChunkSizeOption = DEFAULT_CHUNK_SIZE,
    streams: StreamsOption = DEFAULT_STREAMS,
    verify: VerifyOption = VerifyMode.checksum,
    checksum: ChecksumOption = ChecksumAlgorithm.crc32c,
    retry_for: RetryForOption = DEFAULT_RETRY_FOR_S,
    as_json: JsonOption = False,
) -> None:
    """Start a transfer and print its id; it runs on the workers whether or not you stay."""
    options = _options(chunk_size, streams, verify, checksum, retry_for)

    async def go() -> str:
        StaccatoClient.make_request(source, destination, options)  # usage errors before connecting
        client = await StaccatoClient.connect()
        submitted = await client.submit(source, destination, options)
        await _warn_without_workers(client)
        return submitted

    transfer = _run(go)
    typer.echo(json.dumps({"id": transfer}) if as_json else transfer)


@app.command()
def cp(
    source: Annotated[str, typer.Argument(help="Source URL or path.", metavar="SOURCE")],
    destination: Annotated[
        str,
        typer.Argument(help="Destination URL or path (the file to write).", metavar="DESTINATION"),
    ],
    chunk_size: ChunkSizeOption = DEFAULT_CHUNK_SIZE,
    streams: StreamsOption = DEFAULT_STREAMS,
    verify: VerifyOption = VerifyMode.checksum,
    checksum: ChecksumOption = ChecksumAlgorithm.crc32c,
    retry_for: RetryForOption = DEFAULT_RETRY_FOR_S,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Copy SOURCE to DESTINATION and follow it with a progress bar.

    Exits 0 only when the destination is published and verified. Ctrl-C stops
    following; the transfer goes on (see `staccato status`).
    """
    options = _options(chunk_size, streams, verify, checksum, retry_for)

    async def go() -> TransferStatus:
        StaccatoClient.make_request(source, destination, options)
        client = await StaccatoClient.connect()
        transfer = await client.submit(source, destination, options)
        if not quiet:
            typer.echo(f"transfer {transfer}: {redact(source)} -> {destination}", err=True)
        await _warn_without_workers(client)
        return await _follow(client, transfer, quiet=quiet)

    final = _run(go)
    _exit_for(final)


@app.command()
def watch(transfer: TransferArg) -> None:
    """Follow a transfer with a progress bar until it ends (exit code as for cp)."""

    async def go() -> TransferStatus:
        client = await StaccatoClient.connect()
        await _warn_without_workers(client)
        return await _follow(client, transfer, quiet=False)

    _exit_for(_run(go))


async def _warn_without_workers(client: StaccatoClient) -> None:
    try:
        if await client.pollers() == 0:
            typer.echo(
                f"staccato: warning: no worker is polling task queue {client.task_queue!r}; the "
                "transfer waits until one does (`staccato up --detach` or `staccato worker`)",
                err=True,
            )
    except Exception:  # a hint only: never fail a transfer over it
        pass


def _exit_for(final: TransferStatus) -> None:
    if final.state == TransferState.completed:
        typer.echo(f"completed: {final.bytes_done} bytes, {final.checksum}", err=True)
        return
    _fail(f"transfer {final.id} {final.state.value}: {final.error or final.state.value}")


async def _follow(client: StaccatoClient, transfer: str, *, quiet: bool) -> TransferStatus:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    final: TransferStatus | None = None
    if quiet:
        async for final in client.follow(transfer):  # noqa: B007 - keep the last status
            pass
    elif console.is_terminal:
        columns = (
            TextColumn("[bold]{task.fields[state]}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("copy", total=None, state="scheduled", note="")
            async for final in client.follow(transfer):
                bar.update(
                    task,
                    total=final.bytes_total,
                    completed=final.bytes_done,
                    state=final.state.value,
                    note=_retry_note(final),
                )
    else:
        last_line = 0.0
        async for final in client.follow(transfer):
            now = time.monotonic()
            if now - last_line >= 2 or final.state in _TERMINAL:
                last_line = now
                console.print(_plain_line(final), highlight=False, soft_wrap=True)
    assert final is not None
    return final


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _plain_line(s: TransferStatus) -> str:
    total = _human(s.bytes_total) if s.bytes_total is not None else "?"
    pct = f" ({100 * s.bytes_done / s.bytes_total:.0f}%)" if s.bytes_total else ""
    rate = f" {_human(s.rate_bytes_per_s)}/s" if s.rate_bytes_per_s else ""
    eta = f" eta {s.eta_s:.0f}s" if s.eta_s is not None else ""
    retry = f" {_retry_note(s)}" if s.last_retry_error else ""
    return f"{s.state.value}: {_human(s.bytes_done)} / {total}{pct}{rate}{eta}{retry}"


def _retry_note(s: TransferStatus) -> str:
    """``retrying: <reason> (next attempt at <time>)``, or "" when nothing is retrying."""
    if not s.last_retry_error:
        return ""
    when = f" (next attempt at {s.next_attempt_at})" if s.next_attempt_at else ""
    return f"retrying: {s.last_retry_error}{when}"


@app.command()
def status(transfer: TransferArg, as_json: JsonOption = False) -> None:
    """Show one transfer: state, bytes, rate, ETA, checksum, error."""

    async def go() -> TransferStatus:
        client = await StaccatoClient.connect()
        return await client.status(transfer)

    current = _run(go)
    if as_json:
        typer.echo(json.dumps(current.to_json_dict(), indent=2))
        return
    for key, value in current.to_json_dict().items():
        if value is not None:
            typer.echo(f"{key:18} {value}")


@app.command("list")
def list_transfers(
    state: Annotated[
        TransferState | None, typer.Option("--state", help="Only transfers in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recent transfers, newest first."""

    async def go() -> list[TransferStatus]:
        client = await StaccatoClient.connect()
        return await client.list(state=state, limit=limit)

    statuses = _run(go)
    if as_json:
        typer.echo(json.dumps([s.to_json_dict() for s in statuses], indent=2))
        return
    for s in statuses:
        typer.echo(
            f"{s.id}  {s.state.value:10} {_plain_line(s).split(': ', 1)[1]:40}  {s.source} -> {s.destination}"
        )


def _control(transfer: str, action: str, done: str) -> None:
    """Run ``StaccatoClient.<action>(transfer)`` and say ``done``."""

    async def go() -> None:
        client = await StaccatoClient.connect()
        await getattr(client, action)(transfer)

    _run(go)
    typer.echo(f"{done}: {transfer}")


@app.command()
def cancel(transfer: TransferArg) -> None:
    """Cancel a transfer: temp data is removed, an existing destination is left as it was."""
    _control(transfer, "cancel", "cancel requested")


@app.command()
def pause(transfer: TransferArg) -> None:
    """Pause a running transfer (streams stop at a chunk boundary)."""
    _control(transfer, "pause", "paused")


@app.command()
def resume(transfer: TransferArg) -> None:
    """Resume a paused transfer from what the destination already holds."""
    _control(transfer, "resume", "resumed")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


ProcessesOption = Annotated[
    int | None,
    typer.Option(
        "--processes",
        min=1,
        max=256,
        help="Activity processes (default STACCATO_WORKER_PROCESSES or max(4, CPUs)).",
    ),
]


@app.command()
def worker(
    processes: ProcessesOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Print the effective STACCATO_* settings (secrets masked) and exit; exit 2 "
            "naming each invalid one.",
        ),
    ] = False,
) -> None:
    """Run a worker against the Temporal named by TEMPORAL_ADDRESS (default 127.0.0.1:7233).

    Every STACCATO_* setting is checked first: a bad value exits 2 naming it."""
    from staccato.codec import codec_keys
    from staccato.secrets import seal_keys

    try:
        config = settings.current()
        seal_keys()
        codec_keys()
    except StaccatoError as err:  # SettingsError, SecretKeyError
        _fail(str(err), EXIT_USAGE)
    if check:
        for name, value in config.shown().items():
            typer.echo(f"{name}={value}")
        unknown = settings.unknown_variables()
        if unknown:
            typer.echo(
                f"warning: unknown settings (typos?), ignored: {', '.join(unknown)}", err=True
            )
        return
    from staccato.workers.worker import run_worker

    _setup_logging(verbose)

    async def go() -> None:
        client = await StaccatoClient.connect()
        await run_worker(
            client.temporal,
            task_queue=client.task_queue,
            processes=processes or settings.worker_processes(),
        )

    try:
        _run(go)
    except RuntimeError as err:
        _fail(str(err))


def _pid_file() -> Path:
    return settings.home() / "up.pid"


@app.command()
def up(
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Run in the background; stop with `staccato down`."),
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Temporal gRPC port on 127.0.0.1.")] = 7233,
    ui_port: Annotated[
        int, typer.Option("--ui-port", help="Temporal UI port on 127.0.0.1.")
    ] = settings.DEFAULT_UI_PORT,
    processes: ProcessesOption = None,
) -> None:
    """Run the embedded default: Temporal's dev server (SQLite file under STACCATO_HOME,
    so transfers survive restarts), the Temporal UI, and a worker."""
    from staccato.workers.devserver import DevServerError, port_open, start_dev_server

    home = settings.home()
    home.mkdir(parents=True, exist_ok=True)
    # the key sealing URL tokens, shared by this machine's clients and the worker
    from staccato.secrets import ensure_default_key_file

    ensure_default_key_file()
    address = f"127.0.0.1:{port}"
    if detach:
        pid = _running_pid()
        if pid:  # idempotent: what the caller asked for is already true
            typer.echo(
                f"staccato is already up (pid {pid}); stop it with `staccato down`", err=True
            )
            return
        log_path = home / "staccato-up.log"
        ready_path = home / "up.ready"
        ready_path.unlink(missing_ok=True)
        args = [
            sys.executable,
            "-m",
            "staccato.cli",
            "up",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
        ]
        if processes:
            args += ["--processes", str(processes)]
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "STACCATO_UP_READY_FILE": str(ready_path)},
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not ready_path.exists():
            if child.poll() is not None:
                _fail(f"the service exited with {child.returncode}; see {log_path}")
            time.sleep(0.2)
        if not ready_path.exists():
            child.kill()
            _fail(f"the service did not start within 90 s; see {log_path}")
        typer.echo(
            f"staccato is up (pid {child.pid}): Temporal at {address}, UI at http://127.0.0.1:{ui_port}, "
            f"data in {home}, log in {log_path}. Stop it with `staccato down`."
        )
        return

    _setup_logging(False)
    pid = _running_pid()
    if pid and pid != os.getpid():
        _fail(f"already running (pid {pid}); stop it with `staccato down`")
    server = None
    if port_open("127.0.0.1", port):
        typer.echo(f"using the Temporal server already listening on {address}", err=True)
    else:
        try:
            server = start_dev_server(home, port=port, ui_port=ui_port)
        except DevServerError as err:
            _fail(str(err))
    _pid_file().write_text(str(os.getpid()))
    typer.echo(
        f"Temporal dev server on {address}, UI at http://127.0.0.1:{ui_port}, data in {home}",
        err=True,
    )

    async def go() -> None:
        from staccato.workers.worker import run_worker

        client = await StaccatoClient.connect(target_host=address, namespace="default")
        ready = asyncio.Event()

        async def mark_ready() -> None:
            await ready.wait()
            ready_file = os.environ.get("STACCATO_UP_READY_FILE")
            if ready_file:
                Path(ready_file).write_text("ready")

        marker = asyncio.create_task(mark_ready())
        await run_worker(
            client.temporal,
            task_queue=client.task_queue,
            processes=processes or settings.worker_processes(),
            ready=ready,
        )
        marker.cancel()

    try:
        _run(go)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        _pid_file().unlink(missing_ok=True)


@app.command("codec-server")
def codec_server(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8081,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (keep it private: it decrypts).")
    ] = "127.0.0.1",
    origins: Annotated[
        list[str] | None,
        typer.Option(
            "--origin",
            help="Temporal UI origin allowed to call it (CORS); repeat for several. "
            "Default: the embedded UI, http://127.0.0.1:8233 and http://localhost:8233.",
        ),
    ] = None,
) -> None:
    """Serve the payload codec (STACCATO_CODEC_KEY) for the Temporal UI and CLI: POST
    /encode and /decode. Set http://HOST:PORT as the UI's codec endpoint."""
    from staccato.codec import EncryptionCodec, codec_keys
    from staccato.codec_server import make_server

    _setup_logging(False)
    try:
        keys = codec_keys()
    except StaccatoError as err:
        _fail(str(err), EXIT_USAGE)
    if not keys:
        _fail(
            "the payload codec is off: set STACCATO_CODEC_KEY (or STACCATO_CODEC_KEY_FILE) "
            "to the key the clients and workers use",
            EXIT_USAGE,
        )
    ui = origins or [
        f"http://127.0.0.1:{settings.DEFAULT_UI_PORT}",
        f"http://localhost:{settings.DEFAULT_UI_PORT}",
    ]
    try:
        server = make_server(EncryptionCodec(keys), host, port, ui)
    except OSError as err:
        _fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
    typer.echo(
        f"codec server on http://{host}:{server.server_port} (keys "
        f"{', '.join(k.key_id for k in keys)}; CORS for {', '.join(ui)})",
        err=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _running_pid() -> int | None:
    try:
        pid = int(_pid_file().read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        _pid_file().unlink(missing_ok=True)
        return None
    return pid


@app.command()
def down() -> None:
    """Stop what `staccato up --detach` started (worker, dev server, UI)."""
    pid = _running_pid()
    if pid is None:
        typer.echo("staccato is not running")
        return
    # SIGTERM to `staccato up` alone: it lets the worker's streams send their last
    # heartbeat, then stops the dev server itself. The whole group only if it hangs.
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)
    typer.echo("staccato is down")


def main() -> NoReturn:
    """Entry point of the ``staccato`` command.

    Ends with ``os._exit``: the Temporal client's native threads can crash CPython's
    finalization of a short-lived process ("PyGILState_Release: thread state ... must
    be current", temporalio/sdk-python#300), which would turn a success into SIGABRT.
    """
    code = 0
    try:
        app()
    except SystemExit as exit_:
        if isinstance(exit_.code, int):
            code = exit_.code
        elif exit_.code is not None:
            print(exit_.code, file=sys.stderr)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
