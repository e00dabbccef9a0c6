"""Worker settings of the stream's minimum-rate watchdog: defaults, validation, and a
worker that refuses to start on a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from staccato import settings
from tests.helpers import WorkerProcess


def test_min_rate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACCATO_MIN_RATE_BYTES_PER_S", raising=False)
    monkeypatch.delenv("STACCATO_MIN_RATE_WINDOW_S", raising=False)
    assert settings.min_rate_bytes_per_s() == 1024
    assert settings.min_rate_window_s() == 60
    monkeypatch.setenv("STACCATO_MIN_RATE_BYTES_PER_S", "0")  # 0: watchdog off
    monkeypatch.setenv("STACCATO_MIN_RATE_WINDOW_S", "2.5")
    assert settings.min_rate_bytes_per_s() == 0
    assert settings.min_rate_window_s() == 2.5
    for bad in ("-1", "fast", "nan", "inf"):
        monkeypatch.setenv("STACCATO_MIN_RATE_BYTES_PER_S", bad)
        with pytest.raises(ValueError, match="STACCATO_MIN_RATE_BYTES_PER_S must be a number >= 0"):
            settings.min_rate_bytes_per_s()
    for bad in ("0", "-3", "a minute"):
        monkeypatch.setenv("STACCATO_MIN_RATE_WINDOW_S", bad)
        with pytest.raises(ValueError, match="STACCATO_MIN_RATE_WINDOW_S must be a positive"):
            settings.min_rate_window_s()


def test_worker_refuses_a_bad_min_rate_setting(temporal_server, tmp_path: Path) -> None:
    worker = WorkerProcess(
        temporal_server.address,
        processes=1,
        env={"STACCATO_MIN_RATE_WINDOW_S": "0"},
        log_dir=tmp_path,
    )
    with pytest.raises(RuntimeError, match="STACCATO_MIN_RATE_WINDOW_S must be a positive number"):
        worker.start(timeout_s=60)
