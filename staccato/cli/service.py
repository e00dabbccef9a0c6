"""Running the service: ``worker``, ``up`` / ``down`` (the embedded default: Temporal's
dev server, its UI and a worker, optionally in the background) and ``codec-server``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from staccato import settings, units
from staccato.cli.common import EXIT_USAGE, fail, run, setup_logging, warn_unknown_settings
from staccato.cli.options import ProcessesOption, port_option
from staccato.errors import StaccatoError

#: seconds ``up --detach`` waits for the background service to be ready
UP_READY_TIMEOUT_S = 90
#: seconds ``down`` waits for ``up`` to stop after SIGTERM before killing its group
DOWN_TIMEOUT_S = 30


def worker(
    processes: ProcessesOption = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Log at DEBUG instead of INFO (Staccato's own loggers; httpx, botocore and "
            "paramiko stay at WARNING).",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Print the effective STACCATO_* settings (secrets masked) and exit; exit 2 "
            "naming each invalid one.",
        ),
    ] = False,
) -> None:
    """Run a worker against the Temporal named by TEMPORAL_ADDRESS (default: that of the
    `staccato up` running with this STACCATO_HOME, or of the dev server a killed one
    left running, or the one a stopped `up` recorded, else 127.0.0.1:7233).

    Every STACCATO_* setting is checked first: a bad value exits 2 naming it."""
    from staccato.codec import codec_keys
    from staccato.secrets import seal_keys

    try:
        config = settings.checked()  # all of them, start-only ones too
        seal_keys()
        codec_keys()
        if config.staging_dir is not None:  # set explicitly: it must be usable now
            from staccato.staging import StagingCache

            StagingCache(config.staging_dir, config.staging_max_bytes).ensure_root()
        # the memory cap must cover the processes asked for
        share = config.buffer_budget_bytes(processes or config.effective_worker_processes)
        _check_sftp_transport(config)
    except StaccatoError as err:  # SettingsError, SecretKeyError, PermanentError
        fail(str(err), EXIT_USAGE)
    warn_unknown_settings()
    if check:
        for name, value in config.shown().items():
            typer.echo(f"{name}={value}")
        # what a chunk must stay under not to run alone in its process (README
        # "Capacity"; tester74 read the cap as a hard bound for any chunk size)
        typer.echo(
            f"# each activity process's share of STACCATO_WORKER_MEMORY_BYTES for chunk "
            f"buffers: {share} bytes ({units.size(share)}); a larger chunk runs alone in its "
            "process, above the cap",
            err=True,  # stdout stays NAME=VALUE lines
        )
        return
    from staccato.workers.worker import run_worker

    setup_logging(verbose)

    async def go() -> None:
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        await run_worker(
            client.temporal,
            task_queue=client.task_queue,
            processes=processes or settings.worker_processes(),
        )

    try:
        run(go, sigterm=False)  # the worker stops gracefully on SIGTERM by itself
    except typer.Exit:
        raise  # click's Exit is a RuntimeError too: already reported
    except RuntimeError as err:
        fail(str(err))


def _check_sftp_transport(config: settings.Settings) -> None:
    """``STACCATO_SFTP_TRANSPORT=openssh`` needs an ``ssh`` client on this PATH: said
    before the worker starts, not at the first SFTP transfer.

    Raises:
        PermanentError: ``openssh`` asked for and no ``ssh`` found.
    """
    if config.sftp_transport == "openssh":
        from staccato.endpoints.sftp.openssh import wanted

        wanted()


def _pid_file() -> Path:
    from staccato.workers.devserver import UP_PID_FILE

    return settings.home() / UP_PID_FILE


def _address_file() -> Path:
    """Where a running ``up`` keeps its Temporal address (``127.0.0.1:PORT``), which
    the clients of its STACCATO_HOME use (:func:`staccato.settings.default_address`)."""
    from staccato.workers.devserver import UP_ADDRESS_FILE

    return settings.home() / UP_ADDRESS_FILE


def _running_address() -> str:
    """The Temporal address of the running ``up``; "an unknown port" when it did not
    say (an older release's ``up``)."""
    try:
        return _address_file().read_text().strip() or "an unknown port"
    except OSError:
        return "an unknown port"


def _cannot_prepare(home: Path, err: OSError) -> str:
    """One line for an OSError while ``up`` prepares its STACCATO_HOME: the path the
    system named (else the home) and the errno's text."""
    where = err.filename or home
    return (
        f"cannot prepare STACCATO_HOME {home}: {where}: {err.strerror or err}; nothing was started"
    )


def _already_up(pid: int, address: str) -> str:
    """What ``up`` says when an ``up`` (pid ``pid``) already runs: where it runs, and
    whether that is the ``address`` asked for."""
    running = _running_address()
    if running == address:
        return (
            f"staccato is already up (pid {pid}) with Temporal at {running}; stop it with "
            "`staccato down`"
        )
    if running == "an unknown port":
        use = "use it"
    else:  # how: this home's clients find it; any other needs its address
        use = (
            f"commands run with this STACCATO_HOME ({settings.home()}) use it, others "
            f"need TEMPORAL_ADDRESS={running}"
        )
    return (
        f"staccato is already up (pid {pid}) with Temporal at {running}, not at {address} "
        f"as asked; {use}; or stop it with `staccato down` and run `up` again "
        "(one `up` per STACCATO_HOME)"
    )


def _last_error(log_path: Path, offset: int) -> str:
    """``: <reason>`` from the last ``staccato: error:`` line the background service
    wrote to ``log_path`` after ``offset`` (bytes), or "" when it wrote none."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    marker = "staccato: error: "
    reasons = [line.split(marker, 1)[1].strip() for line in text.splitlines() if marker in line]
    return f": {reasons[-1].rstrip('.')}" if reasons else ""


def _running_pid() -> int | None:
    """The pid of this STACCATO_HOME's running ``up``, or None (its files removed when
    they name one that is gone, or a zombie: a killed ``up`` nobody reaped)."""
    from staccato.workers.devserver import running_up

    pid = running_up(settings.home())
    if pid is None and _pid_file().exists():
        _pid_file().unlink(missing_ok=True)
        _address_file().unlink(missing_ok=True)
    return pid


def up(
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Run in the background; stop with `staccato down`."),
    ] = False,
    port: Annotated[int, port_option("--port", "Temporal gRPC port on 127.0.0.1.")] = 7233,
    ui_port: Annotated[
        int, port_option("--ui-port", "Temporal UI port on 127.0.0.1 (not --port).")
    ] = settings.DEFAULT_UI_PORT,
    processes: ProcessesOption = None,
) -> None:
    """Run the embedded default: Temporal's dev server (SQLite file under STACCATO_HOME,
    so transfers survive restarts), the Temporal UI, and a worker.

    When something already listens on --port: a Temporal server is used as it is; anything
    else is refused (exit 1) and nothing starts. --port and --ui-port must differ."""
    if ui_port == port:
        raise typer.BadParameter(
            f"must differ from --port (both are {port}): the UI and Temporal's gRPC "
            "API each need a port of their own",
            param_hint="'--ui-port'",
        )
    from staccato.codec import codec_keys
    from staccato.secrets import seal_keys
    from staccato.workers.devserver import (
        UP_LAST_ADDRESS_FILE,
        DevServerError,
        port_open,
        start_dev_server,
        stop_recorded_server,
        temporal_answers,
    )

    def check_taken_port() -> None:
        """Refuse (exit 1, before anything starts) a --port something listens on that
        does not answer as a Temporal server."""
        if port_open("127.0.0.1", port) and not temporal_answers(address):
            # a port free now (a tester was offered the port their own UI held)
            free = [
                p
                for p in (port + 1, port - 1, port + 2, port + 3, port - 2)
                if 0 < p < 65536 and p != ui_port and not port_open("127.0.0.1", p)
            ]
            example = f" (e.g. --port {free[0]}, free now)" if free else ""
            fail(
                f"port {port} on 127.0.0.1 is taken by something that does not answer as a "
                f"Temporal server; stop it or choose another port with --port{example}; "
                "nothing was started"
            )

    try:  # checked as `staccato worker` does, before anything starts
        config = settings.checked()  # all of them, start-only ones too
        seal_keys()
        codec_keys()
        # the memory cap must cover the processes asked for (names the setting and
        # the least it may be)
        config.buffer_budget_bytes(processes or config.effective_worker_processes)
        _check_sftp_transport(config)
    except StaccatoError as err:  # SettingsError, SecretKeyError, PermanentError
        fail(str(err), EXIT_USAGE)
    warn_unknown_settings()
    home = settings.home()
    # the key sealing URL tokens, shared by this machine's clients and the worker
    from staccato.secrets import ensure_default_key_file

    try:
        home.mkdir(parents=True, exist_ok=True)
        ensure_default_key_file()
    except OSError as err:  # no space, no permission: the environment, not a bug
        fail(_cannot_prepare(home, err), EXIT_USAGE)
    address = f"127.0.0.1:{port}"
    if detach:
        pid = _running_pid()
        if pid:
            if _running_address() != address:  # not what the caller asked for
                fail(_already_up(pid, address))
            if not port_open("127.0.0.1", port):  # its server died: `up` starts it again
                fail(
                    f"staccato is up (pid {pid}) but its Temporal server at {address} does "
                    f"not answer: it is being started again, or failed to start (see "
                    f"{home / 'staccato-up.log'} and {home / 'temporal.log'}); "
                    "`staccato down` then `staccato up` starts everything anew"
                )
            # idempotent: what the caller asked for is already true
            typer.echo(_already_up(pid, address), err=True)
            return
        check_taken_port()
        log_path = home / "staccato-up.log"
        ready_path = home / "up.ready"
        try:
            ready_path.unlink(missing_ok=True)
            log = open(log_path, "ab")  # noqa: SIM115 (closed below, once the child has it)
        except OSError as err:
            fail(_cannot_prepare(home, err), EXIT_USAGE)
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
        with log:
            logged_from = log.tell()
            child = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "STACCATO_UP_READY_FILE": str(ready_path)},
            )
        deadline = time.monotonic() + UP_READY_TIMEOUT_S
        while time.monotonic() < deadline and not ready_path.exists():
            if child.poll() is not None:
                fail(
                    f"the service exited with {child.returncode}"
                    f"{_last_error(log_path, logged_from)}; see {log_path}"
                )
            time.sleep(0.2)
        if not ready_path.exists():
            child.kill()
            fail(f"the service did not start within {UP_READY_TIMEOUT_S} s; see {log_path}")
        # the service's own account: it may have stopped a server left by a killed `up`
        # (listening when `attached` was guessed) and started its own
        attached = ready_path.read_text().strip() != "started"
        typer.echo(
            f"staccato is up (pid {child.pid}): Temporal at {address}, "
            f"{_ui_text(attached, ui_port)}, "
            f"data in {home}, log in {log_path}. Stop it with `staccato down`."
        )
        return

    setup_logging(False)
    pid = _running_pid()
    if pid and pid != os.getpid():
        fail(_already_up(pid, address))
    server = None
    orphan = stop_recorded_server(home)  # no `up` runs: its server is left from a killed one
    if orphan:
        typer.echo(
            f"stopped the Temporal dev server (pid {orphan[0]}, port {orphan[1]}) left "
            "running by a `staccato up` that was killed",
            err=True,
        )
    check_taken_port()
    if port_open("127.0.0.1", port):
        typer.echo(f"using the Temporal server already listening on {address}", err=True)
    else:
        try:
            server = start_dev_server(home, port=port, ui_port=ui_port)
        except DevServerError as err:
            fail(str(err))
    try:
        _pid_file().write_text(str(os.getpid()))
        _address_file().write_text(address)
        # kept after `up` ends, so a command then says where it ran (not only 7233)
        (home / UP_LAST_ADDRESS_FILE).write_text(address)
    except OSError as err:
        if server is not None:
            stop_recorded_server(home)
        _pid_file().unlink(missing_ok=True)
        fail(_cannot_prepare(home, err), EXIT_USAGE)
    typer.echo(
        f"Temporal dev server on {address}, {_ui_text(server is None, ui_port)}, data in {home}",
        err=True,
    )

    servers = [server]  # the dev server now: it is started again if it dies
    gave_up: list[str] = []

    async def go() -> None:
        from staccato.client import StaccatoClient
        from staccato.workers.worker import run_worker

        client = await StaccatoClient.connect(target_host=address, namespace="default")
        ready = asyncio.Event()
        if server is not None:
            keeper = asyncio.create_task(
                keep_server_up(servers, home, port=port, ui_port=ui_port, gave_up=gave_up)
            )
            keeper.add_done_callback(lambda task: task.cancelled() or task.exception())

        async def mark_ready() -> None:
            await ready.wait()
            ready_file = os.environ.get("STACCATO_UP_READY_FILE")
            if ready_file:  # what it did: the detached parent reports that, not a guess
                written = Path(ready_file + ".tmp")  # whole when it appears
                written.write_text("attached" if server is None else "started")
                written.replace(ready_file)

        marker = asyncio.create_task(mark_ready())
        await run_worker(
            client.temporal,
            task_queue=client.task_queue,
            processes=processes or settings.worker_processes(),
            ready=ready,
        )
        marker.cancel()

    try:
        run(go, sigterm=False)  # the worker stops gracefully on SIGTERM by itself
    finally:
        if servers[0] is not None:
            servers[0].terminate()
            try:
                servers[0].wait(timeout=20)
            except subprocess.TimeoutExpired:
                servers[0].kill()
        _pid_file().unlink(missing_ok=True)
        _address_file().unlink(missing_ok=True)
    if gave_up:
        fail(gave_up[0])


#: seconds between two looks at the embedded dev server's process
SERVER_WATCH_S = 1.0
#: the embedded dev server may fail (die, or fail to start again) at most this many
#: times in :data:`SERVER_RESTART_WINDOW_S` seconds; past that, ``up`` stops (exit 1)
SERVER_RESTARTS = 5
SERVER_RESTART_WINDOW_S = 600.0
#: seconds before a failed start is tried again: the first wait, doubled each time
#: up to the last
START_RETRY_FIRST_S = 1.0
START_RETRY_MAX_S = 30.0


def _stop_up() -> None:
    """Stop this ``up`` as ``down`` does (SIGTERM: its worker stops gracefully)."""
    os.kill(os.getpid(), signal.SIGTERM)


async def keep_server_up(
    servers: list[subprocess.Popen[bytes] | None],
    home: Path,
    *,
    port: int,
    ui_port: int,
    gave_up: list[str],
    stop: Callable[[], None] = _stop_up,
) -> None:
    """Start ``up``'s Temporal dev server (``servers[0]``) again when it dies (killed by
    SIGKILL, e.g. out of memory, or crashed: exit status not 0), on the same ports and
    SQLite file (a SIGINT, a SIGTERM or exit 0 is a stop, not restarted): its transfers and
    their histories are kept, and the worker's client reconnects by itself. A start
    that fails is tried again after :data:`START_RETRY_FIRST_S`, doubled each time up
    to :data:`START_RETRY_MAX_S` seconds (1, 2, 4 ... 30 s).

    Deaths and failed starts both count: more than :data:`SERVER_RESTARTS` of them in
    :data:`SERVER_RESTART_WINDOW_S` seconds (a server that dies again and again, or
    one that can never start: its port taken, its database unusable) put the reason
    into ``gave_up`` and call ``stop`` (``up`` stops itself and exits 1), so that
    ``up`` can be run again rather than seem up with no server. With the defaults, a
    server that cannot start gives up after its death and 5 failed starts, about 15 s
    of waits.
    """
    from staccato.workers.devserver import DevServerError, start_dev_server

    failures: list[float] = []  # monotonic times of deaths and failed starts
    log_path = home / "temporal.log"

    def too_many(what: str) -> bool:
        """Count a failure; past the limit, give up naming ``what`` happened last."""
        nonlocal failures
        now = time.monotonic()
        failures = [t for t in failures if now - t < SERVER_RESTART_WINDOW_S] + [now]
        if len(failures) <= SERVER_RESTARTS:
            return False
        see = "" if str(log_path) in what else f"; see {log_path}"
        gave_up.append(
            f"the Temporal dev server failed {len(failures)} times in "
            f"{SERVER_RESTART_WINDOW_S:.0f} s (deaths and failed starts), last: {what}; "
            f"stopping{see}"
        )
        stop()
        return True

    while True:
        await asyncio.sleep(SERVER_WATCH_S)
        current = servers[0]
        if current is None or current.poll() is None:
            continue
        if current.returncode in (0, -signal.SIGINT, -signal.SIGTERM):
            # asked to stop (Ctrl-C reaches its process group too) or a clean exit: not
            # a crash, and `up` may be stopping: not started again
            typer.echo(
                f"the Temporal dev server (pid {current.pid}) stopped (exit "
                f"{current.returncode}); not starting it again",
                err=True,
            )
            return
        if too_many(f"it died with exit {current.returncode}"):
            return
        typer.echo(
            f"the Temporal dev server (pid {current.pid}) exited with {current.returncode}; "
            f"starting it again on 127.0.0.1:{port} (see {log_path})",
            err=True,
        )
        delay = START_RETRY_FIRST_S
        while True:
            try:
                servers[0] = await asyncio.to_thread(
                    start_dev_server, home, port=port, ui_port=ui_port
                )
                break
            except DevServerError as err:
                if too_many(f"a start failed: {err}"):
                    return
                typer.echo(f"could not start it again: {err}; next try in {delay:g} s", err=True)
                await asyncio.sleep(delay)
                delay = min(START_RETRY_MAX_S, delay * 2)


def down() -> None:
    """Stop what `staccato up --detach` started (worker, dev server, UI)."""
    from staccato.workers.devserver import process_running, stop_recorded_server

    pid = _running_pid()
    if pid is None:
        # a `staccato up` killed with SIGKILL leaves its dev server behind: stop it
        orphan = stop_recorded_server(settings.home())
        if orphan is None:
            typer.echo("staccato is not running")
        else:
            typer.echo(
                f"stopped the Temporal dev server (pid {orphan[0]}, port {orphan[1]}) left "
                "running by a `staccato up` that was killed; staccato is down"
            )
        return
    running = _running_ids(_running_address())
    # SIGTERM to `staccato up` alone: it lets the worker's streams send their last
    # heartbeat, then stops the dev server itself. The whole group only if it hangs.
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT_S
    while time.monotonic() < deadline:
        if not process_running(pid):
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)
    _address_file().unlink(missing_ok=True)
    stop_recorded_server(settings.home())  # `up` stops it; killed mid-way, it may not have
    if running:
        # a tester's `down` said only "staccato is down" with a transfer running
        named = ", ".join(running[:_NAMED]) + (
            f" and {len(running) - _NAMED} more" if len(running) > _NAMED else ""
        )
        typer.echo(
            f"staccato is down; {len(running)} still to run or finish ({named}): they go "
            "on from their last checkpoint when "
            f"`staccato up` starts again (the dev server keeps them in {settings.home()})"
        )
        return
    typer.echo("staccato is down")


#: seconds `down` asks Temporal which transfers run before it stops the service
_COUNT_WAIT_S = 3.0
#: at most this many of them are looked at (and the first few named)
_COUNT_MOST = 1000
_NAMED = 3


def _running_ids(address: str) -> list[str]:
    """The ids of the transfers, datasets and fan-out groups that run (or wait to
    start) on this home's task queue on the Temporal at ``address``, children of a
    dataset or group left out (their parent goes on with them); empty when it cannot
    tell within :data:`_COUNT_WAIT_S`. A tester's count included runs of another task
    queue, which no worker of this `up` goes on with, and children twice."""
    from staccato.run_fields import DATASET_TYPE, TRANSFER_TYPE

    async def listed() -> list[str]:
        from temporalio.client import Client

        from staccato.core_logs import new_runtime

        client = await Client.connect(
            address, namespace=settings.DEFAULT_NAMESPACE, runtime=new_runtime()
        )
        kinds = ", ".join(f"'{t}'" for t in (TRANSFER_TYPE, DATASET_TYPE, "FanOutWorkflow"))
        queue = settings.task_queue().replace("'", "")
        ids: list[str] = []
        async for execution in client.list_workflows(
            f"ExecutionStatus = 'Running' AND WorkflowType IN ({kinds}) AND TaskQueue = '{queue}'",
            limit=_COUNT_MOST,
        ):
            if execution.parent_id is None:
                ids.append(execution.id)
        return ids

    try:
        return asyncio.run(asyncio.wait_for(listed(), _COUNT_WAIT_S))
    except Exception:  # noqa: BLE001 - a hint only: `down` goes on
        return []


def codec_server(
    port: Annotated[int, port_option("--port", "Port to listen on.")] = 8081,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (keep it private: it decrypts).")
    ] = "127.0.0.1",
    origins: Annotated[
        list[str] | None,
        typer.Option(
            "--origin",
            help="Temporal UI origin allowed to call it (CORS); repeat for several. "
            "Default: the embedded UI on 127.0.0.1 and localhost, at the --ui-port of the "
            "`staccato up` running with this STACCATO_HOME, else at port 8233.",
        ),
    ] = None,
) -> None:
    """Serve the payload codec (STACCATO_CODEC_KEY) for the Temporal UI and CLI: POST
    /encode and /decode. Set http://HOST:PORT as the UI's codec endpoint."""
    from staccato.codec import EncryptionCodec, codec_keys
    from staccato.codec_server import make_server

    setup_logging(False)
    try:
        keys = codec_keys()
    except StaccatoError as err:
        fail(str(err), EXIT_USAGE)
    if not keys:
        fail(
            "the payload codec is off: set STACCATO_CODEC_KEY (or STACCATO_CODEC_KEY_FILE) "
            "to the key the clients and workers use",
            EXIT_USAGE,
        )
    from staccato.workers.devserver import recorded_ui_port

    ui_port = recorded_ui_port(settings.home()) or settings.DEFAULT_UI_PORT
    ui = origins or [f"http://127.0.0.1:{ui_port}", f"http://localhost:{ui_port}"]
    try:
        server = make_server(EncryptionCodec(keys), host, port, ui)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
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


def _ui_text(attached: bool, ui_port: int) -> str:
    """Where the Temporal UI is, as ``up`` reports it: at ``ui_port`` when it started
    the dev server; when it uses a Temporal server already listening (only its worker
    started), that server's own UI, if it has one (it claimed ``--ui-port``, where
    nothing listened; found by a tester)."""
    if attached:
        return "UI: the existing server's own, if any (--ui-port unused: no server started)"
    return f"UI at http://127.0.0.1:{ui_port}"
