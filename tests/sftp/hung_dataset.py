"""The scene of the tests of a dataset to an SFTP server that hangs mid-copy
(tests/sftp/test_sftp_dataset_hung_leftovers.py, test_sftp_dataset_cancel_hung.py): a
paced tree of small files under way to the server, one file in flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import status_when
from tests.helpers import MiB, stopped_process_tree, write_random
from tests.servers.sshd import SshdServer

FILES = 40
FILE_BYTES = 256 * 1024
#: paced so each file takes ~1 s: the server is stopped with a file in flight
OPTIONS = TransferOptions(
    chunk_size=1 * MiB, streams=1, max_rate=300_000, retry_for_s=12, heartbeat_timeout_s=5
)


async def dataset_under_way(
    client: StaccatoClient, server: SshdServer, data_dir: Path, *, seed: int
) -> tuple[str, Path]:
    """A dataset of :data:`FILES` random files (``seed``) from ``data_dir/src`` to
    ``data_dir/out`` on ``server``, with :data:`OPTIONS`, once 4 files are done and it
    still copies (at most 120 s). Returns its id and the destination directory.

    Raises:
        AssertionError: it ended before the server could be stopped mid-file.
    """
    source = data_dir / "src"
    for i in range(FILES):
        path = source / f"d{i % 2}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, FILE_BYTES, seed=seed + i)
    out = data_dir / "out"
    out.mkdir()
    dataset = await submit_dataset(client, str(source), server.url(str(out)), options=OPTIONS)
    before = await status_when(client, dataset, lambda s: s.files_done >= 4, 120)
    assert before.state == DatasetState.running, before  # still copying: stop it now
    assert server.pid is not None, "sshd is not running"
    return dataset, out


def session_files(out: Path) -> list[Path]:
    """The write sessions' files under ``out`` (temp files, journals, writers
    directories: hidden names holding ``.staccato-``)."""
    return sorted(p for p in out.rglob(".*") if ".staccato-" in p.name)


@contextlib.asynccontextmanager
async def stopped_mid_file(
    server: SshdServer, out: Path, tries: int = 5
) -> AsyncIterator[list[Path]]:
    """The server's process tree SIGSTOPped (a hung server) for the block, stopped at a
    moment a file's write session is open under ``out``; yields the session files there
    at the stop. A fixed pause before the stop met no open session at load ~20 (ci93:
    between two files); so this waits (at most 60 s) until a temp file shows, stops the
    server, and looks again: a file renamed between the look and the stop lets the
    server run on to the next file's session (at most ``tries`` times).

    Raises:
        AssertionError: no session was open at any of ``tries`` stops.
    """
    assert server.pid is not None, "sshd is not running"
    loop = asyncio.get_running_loop()
    for _ in range(tries):
        deadline = loop.time() + 60
        while not session_files(out):
            assert loop.time() < deadline, f"no write session showed under {out} within 60 s"
            await asyncio.sleep(0.05)
        with stopped_process_tree(server.pid):
            seen = session_files(out)
            if seen:
                yield seen
                return
    raise AssertionError(f"no write session was open under {out} at any of {tries} stops")
