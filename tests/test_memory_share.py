"""A chunk buffer larger than its activity process's whole share of
``STACCATO_WORKER_MEMORY_BYTES`` is granted only when nothing else is reserved in the
process (it could never fit otherwise) and the worker logs a warning, since the worker
may then hold one such buffer per process, above the cap (tester74: two 512 MiB-chunk
transfers under a 1.2 GiB cap peaked at 2.4 GiB with nothing said). ``worker --check``
shows the share on stderr, its stdout staying ``NAME=VALUE`` lines."""

from __future__ import annotations

import logging
import threading

import pytest

from staccato.activities.capacity import MemoryBudget
from tests.helpers import MiB, run_cli


def test_a_chunk_over_the_share_runs_alone_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = MemoryBudget(64 * MiB)
    with caplog.at_level(logging.WARNING, logger="staccato.capacity"):
        with budget.reserved(32 * MiB, 0, lambda reason: None):
            pass
        assert not caplog.records, caplog.text
        granted = threading.Event()
        waits: list[str] = []

        def big() -> None:
            with budget.reserved(512 * MiB, 1, waits.append):
                granted.set()

        with budget.reserved(16 * MiB, 0, lambda reason: None):
            thread = threading.Thread(target=big)
            thread.start()
            # held back while another buffer is reserved: it waits (and says why)
            for _ in range(100):
                if waits:
                    break
                threading.Event().wait(0.1)
            assert waits and not granted.is_set(), waits
        thread.join(30)
        assert granted.is_set()
    said = caplog.text
    assert "512.0 MiB is larger than this activity process's whole share" in said, said
    assert "64.0 MiB" in said and "one such buffer per process, above the cap" in said, said


def test_worker_check_shows_the_share() -> None:
    done = run_cli(
        "worker",
        "--check",
        "--processes",
        "4",
        address="127.0.0.1:1",
        env={"STACCATO_WORKER_MEMORY_BYTES": str(1288490240)},
    )
    assert done.returncode == 0, done
    assert all("=" in line for line in done.stdout.splitlines()), done.stdout
    assert "share of STACCATO_WORKER_MEMORY_BYTES for chunk buffers: " in done.stderr, done
