"""A malformed key setting is a bad setting: every command that reads the key refuses
it with exit 2 naming the variable (as ``worker --check`` does); a command that does
not need it (no token in its URLs) warns once and goes on (tester72)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli, sha256_file, write_random

KEY_ADVICE = "is not base64 of 32 random bytes"


@pytest.fixture
def cli(temporal_server, worker):
    def run(*args: str, **kwargs):
        return run_cli(
            *args, address=temporal_server.address, task_queue=worker.task_queue, **kwargs
        )

    return run


def test_a_malformed_codec_key_exits_2_naming_it(cli) -> None:
    result = cli("list", env={"STACCATO_CODEC_KEY": "short"})
    assert result.returncode == 2, result.stderr
    assert "STACCATO_CODEC_KEY" in result.stderr and KEY_ADVICE in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STACCATO_SECRET_KEY": "short"}, "STACCATO_SECRET_KEY"),
        ({"STACCATO_SECRET_KEY_FILE": "/nonexistent/secret.key"}, "STACCATO_SECRET_KEY_FILE"),
    ],
)
def test_a_malformed_secret_key_refuses_a_token_url_with_exit_2(
    cli, data_dir: Path, env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACCATO_SECRET_KEY", raising=False)  # the suite's key (conftest)
    dest = data_dir / "dst.bin"
    result = cli("cp", "http://127.0.0.1:9/x?token=abc", str(dest), env=env)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "warning" not in result.stderr  # refused once, not warned as well
    assert not dest.exists()


def test_a_malformed_secret_key_is_a_warning_when_no_url_needs_it(cli, data_dir: Path) -> None:
    source = data_dir / "src.bin"
    write_random(source, 4096)
    dest = data_dir / "dst.bin"
    result = cli("cp", str(source), str(dest), env={"STACCATO_SECRET_KEY": "short"})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "STACCATO_SECRET_KEY" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("staccato: warning: ") and KEY_ADVICE in warnings[0]
    assert sha256_file(dest) == sha256_file(source)
