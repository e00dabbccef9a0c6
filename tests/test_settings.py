"""One settings model for every ``STACCATO_*`` variable: defaults, validation with a
message naming the variable, ``staccato worker`` refusing to start on a bad value,
and ``staccato worker --check`` printing the effective values with secrets masked."""

from __future__ import annotations

import base64
import json
import os

import pytest

from staccato import settings
from staccato.ids import transfer_id
from tests.helpers import run_cli


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("STACCATO_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    config = settings.current()
    assert config.task_queue == "staccato"
    assert config.min_rate_bytes_per_s == 1024 and config.min_rate_window_s == 60
    assert config.worker_shutdown_timeout_s == 5
    assert config.worker_sticky_timeout_s == 10  # Temporal's own default
    assert config.sftp_io_timeout_s == 60 and config.sftp_stall_s == 10
    assert config.effective_worker_processes >= 4
    assert config.secret_key is None and config.codec_key is None


def test_values_are_parsed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STACCATO_MIN_RATE_BYTES_PER_S", "0")  # 0: watchdog off
    clean_env.setenv("STACCATO_MIN_RATE_WINDOW_S", "2.5")
    clean_env.setenv("STACCATO_SFTP_TRUST_NEW_HOSTS", "yes")
    clean_env.setenv("STACCATO_SSH_IDENTITY", f"~/a{os.pathsep}/b")
    clean_env.setenv("STACCATO_WORKER_PROCESSES", "3")
    clean_env.setenv("STACCATO_WORKER_STICKY_TIMEOUT_S", "2")
    config = settings.current()
    assert config.worker_sticky_timeout_s == 2
    assert config.min_rate_bytes_per_s == 0 and config.min_rate_window_s == 2.5
    assert config.sftp_trust_new_hosts is True
    assert config.ssh_identity == [os.path.expanduser("~/a"), "/b"]
    assert config.effective_worker_processes == 3


def test_byte_settings_take_units(clean_env: pytest.MonkeyPatch) -> None:
    """A ``*_BYTES`` setting takes a unit as the command line's sizes do (tester74:
    ``STACCATO_SOCKET_BUFFER_BYTES=4MiB`` was refused as not an integer)."""
    clean_env.setenv("STACCATO_SOCKET_BUFFER_BYTES", "4MiB")
    clean_env.setenv("STACCATO_WORKER_MEMORY_BYTES", "3G")
    clean_env.setenv("STACCATO_TUNING_MEMORY_BYTES", "64MiB")
    clean_env.setenv("STACCATO_STAGING_MAX_BYTES", "100MB")
    config = settings.checked()
    assert config.socket_buffer_bytes == 4 * 1024**2
    assert config.worker_memory_bytes == 3 * 1024**3
    assert config.tuning_memory_bytes == 64 * 1024**2
    assert config.staging_max_bytes == 100 * 10**6


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("STACCATO_MIN_RATE_BYTES_PER_S", "-1"),
        ("STACCATO_MIN_RATE_BYTES_PER_S", "nan"),
        ("STACCATO_MIN_RATE_WINDOW_S", "0"),
        ("STACCATO_WORKER_PROCESSES", "four"),
        ("STACCATO_WORKER_PROCESSES", "0"),
        ("STACCATO_WORKER_SHUTDOWN_TIMEOUT_S", "-5"),
        ("STACCATO_SFTP_IO_TIMEOUT_S", "a minute"),
        ("STACCATO_SFTP_MAX_CONNECTIONS", "1.5"),
        ("STACCATO_SFTP_TRUST_NEW_HOSTS", "perhaps"),
        ("STACCATO_TASK_QUEUE", "  "),
        ("STACCATO_TASK_QUEUE", " staccato"),
        ("STACCATO_CLOCK_SKEW_S", "-1"),
        ("STACCATO_HOME", "/etc/hostname"),
        ("STACCATO_WORKER_THREADS", "0"),
        ("STACCATO_WORKER_MEMORY_BYTES", "1000"),
        ("STACCATO_WORKER_MEMORY_BYTES", "2Gb"),
        ("STACCATO_SOCKET_BUFFER_BYTES", "4 MiB per link"),
        ("STACCATO_SOCKET_BUFFER_BYTES", "2KiB"),
        ("STACCATO_HANG_S", "abc"),
        ("STACCATO_HANG_S", "0.5"),
        ("STACCATO_OWNER", "o" * 65),
        ("STACCATO_CLEANUP_FOR_S", "inf"),
    ],
)
def test_a_bad_value_names_the_variable(clean_env: pytest.MonkeyPatch, name: str, bad: str) -> None:
    clean_env.setenv(name, bad)
    with pytest.raises(settings.SettingsError) as err:
        settings.checked()
    assert f"{name}={bad!r}" in str(err.value)


def test_worker_refuses_a_bad_value_at_start(temporal_server) -> None:
    """No Temporal connection or polling first: the value is refused at once, exit 2."""
    run = run_cli(
        "worker",
        address=temporal_server.address,
        env={"STACCATO_MIN_RATE_WINDOW_S": "0", "STACCATO_SFTP_STALL_S": "soon"},
        timeout_s=60,
    )
    assert run.returncode == 2, run
    assert "STACCATO_MIN_RATE_WINDOW_S='0'" in run.stderr
    assert "STACCATO_SFTP_STALL_S='soon'" in run.stderr


def test_worker_refuses_a_malformed_key(temporal_server) -> None:
    run = run_cli(
        "worker",
        address=temporal_server.address,
        env={"STACCATO_CODEC_KEY": "not-a-key"},
        timeout_s=60,
    )
    assert run.returncode == 2, run
    assert "STACCATO_CODEC_KEY" in run.stderr and "not-a-key" not in run.stderr


def test_worker_check_masks_secrets_and_warns_of_typos(temporal_server) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    run = run_cli(
        "worker",
        "--check",
        address=temporal_server.address,
        env={
            "STACCATO_SECRET_KEY": key,
            "STACCATO_SFTP_IO_TIMEOUT_S": "30",
            "STACCATO_WORKR_PROCESSES": "3",
        },
        timeout_s=60,
    )
    assert run.returncode == 0, run
    shown = dict(line.split("=", 1) for line in run.stdout.splitlines())
    assert shown["STACCATO_SFTP_IO_TIMEOUT_S"] == "30.0"
    assert shown["STACCATO_SECRET_KEY"] == "**********"
    assert key not in run.stdout + run.stderr
    assert "STACCATO_WORKR_PROCESSES" in run.stderr


def test_every_documented_variable_is_a_setting(temporal_server) -> None:
    """A variable the README's settings table lists is read through the settings model:
    ``worker --check`` shows it and calls none of them a typo (STACCATO_HANG_S and
    STACCATO_OWNER were read beside the model: called typos, a bad value used as the
    default in silence)."""
    env = {"STACCATO_HANG_S": "12", "STACCATO_OWNER": " alice "}
    run = run_cli("worker", "--check", address=temporal_server.address, env=env, timeout_s=60)
    assert run.returncode == 0, run
    shown = dict(line.split("=", 1) for line in run.stdout.splitlines())
    assert shown["STACCATO_HANG_S"] == "12.0" and shown["STACCATO_OWNER"] == "alice"
    assert "unknown settings" not in run.stderr, run.stderr


def test_a_command_that_starts_a_transfer_warns_of_a_misspelt_setting(tmp_path) -> None:
    """``cp`` says which STACCATO_* variable no setting reads (the user who wrote
    STACCATO_TUNNING=0 believes tuning is off), and goes on: a hint, not a failure (here
    it then fails only because no Temporal answers at the address)."""
    source = tmp_path / "a"
    source.write_bytes(b"x")
    run = run_cli(
        "cp",
        str(source),
        str(tmp_path / "b"),
        address="127.0.0.1:1",
        env={"STACCATO_TUNNING": "0"},
        timeout_s=60,
    )
    assert "unknown settings (typos?), ignored: STACCATO_TUNNING" in run.stderr, run.stderr
    assert "127.0.0.1:1" in run.stderr and run.returncode == 1, run


def test_worker_capacity_settings(clean_env: pytest.MonkeyPatch) -> None:
    """Threads per process and the memory cap: defaults, and the chunk-buffer share of
    each process (the cap less the processes' own memory)."""
    config = settings.current()
    assert config.worker_threads == 64 and config.worker_memory_bytes == 2 * 1024**3
    overhead = settings.WORKER_PROCESS_OVERHEAD_BYTES
    assert config.buffer_budget_bytes(4) == (2 * 1024**3 - 6 * overhead) // 4
    clean_env.setenv("STACCATO_WORKER_MEMORY_BYTES", str(512 * 1024**2))
    with pytest.raises(settings.SettingsError) as err:
        settings.current().buffer_budget_bytes(8)
    assert "STACCATO_WORKER_MEMORY_BYTES=536870912" in str(err.value)


def test_worker_check_shows_capacity_and_refuses_a_cap_below_the_processes(
    temporal_server,
) -> None:
    run = run_cli("worker", "--check", address=temporal_server.address, timeout_s=60)
    assert run.returncode == 0, run
    shown = dict(line.split("=", 1) for line in run.stdout.splitlines())
    assert shown["STACCATO_WORKER_THREADS"] == "64"
    assert shown["STACCATO_WORKER_MEMORY_BYTES"] == str(2 * 1024**3)
    run = run_cli(
        "worker",
        "--check",
        "--processes",
        "16",
        address=temporal_server.address,
        env={"STACCATO_WORKER_MEMORY_BYTES": str(1024**3)},
        timeout_s=60,
    )
    assert run.returncode == 2, run
    assert "STACCATO_WORKER_MEMORY_BYTES=1073741824" in run.stderr
    assert "--processes" in run.stderr


#: start-only settings (settings.START_ONLY) with a bad value each, and a word of the
#: range or form the refusal must name
_BAD_START_ONLY = {
    "STACCATO_CLEANUP_FOR_S": ("abc", "valid number"),
    "STACCATO_OWNER": ("o" * 65, "at most 64"),
    "STACCATO_TUNING": ("perhaps", "expected one of"),
}


@pytest.mark.parametrize("name", sorted(_BAD_START_ONLY))
def test_a_bad_start_only_setting_is_refused_by_starts_only(
    worker, temporal_server, tmp_path, name: str
) -> None:
    """tester71: a bad STACCATO_CLEANUP_FOR_S (a setting only a start reads) made EVERY
    command exit 2, ``status``, ``list``, ``cancel``, ``down`` too. Now ``cp`` (a start)
    refuses it, exit 2 naming the variable, its value and what it must be, before
    anything starts; ``status`` of a transfer, ``list``, ``cancel`` and ``down`` work."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 1000)
    done = run_cli("cp", "--quiet", str(source), str(tmp_path / "b.bin"), **args)
    assert done.returncode == 0, done
    run_id = transfer_id(str(tmp_path / "b.bin"))
    bad, words = _BAD_START_ONLY[name]
    env = {name: bad, "STACCATO_HOME": str(tmp_path / "home")}

    started = run_cli("cp", str(source), str(tmp_path / "c.bin"), env=env, **args)
    assert started.returncode == 2, started
    assert f"{name}={bad!r}" in started.stderr and words in started.stderr, started.stderr
    assert not (tmp_path / "c.bin").exists()

    shown = run_cli("status", "--json", run_id, env=env, **args)
    assert shown.returncode == 0, shown
    assert json.loads(shown.stdout)["state"] == "completed"
    listed = run_cli("list", "--json", env=env, **args)
    assert listed.returncode == 0, listed
    cancelled = run_cli("cancel", run_id, env=env, **args)  # an ended one: says so
    assert cancelled.returncode != 2 and "invalid settings" not in cancelled.stderr, cancelled
    down = run_cli("down", env=env, **args)  # no `up` in this home: nothing to stop
    assert down.returncode != 2 and "invalid settings" not in down.stderr, down


def test_a_bad_start_only_setting_is_refused_with_every_other_bad_one(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """:func:`settings.current` leaves a bad start-only setting to :func:`settings.checked`
    (its default meanwhile), and names it with any other bad one it refuses."""
    clean_env.setenv("STACCATO_CLEANUP_FOR_S", "0")
    assert settings.current().cleanup_for_s is None
    with pytest.raises(settings.SettingsError) as err:
        settings.checked()
    assert "STACCATO_CLEANUP_FOR_S='0'" in str(err.value) and "greater than or equal to 1" in str(
        err.value
    )
    clean_env.setenv("STACCATO_HANG_S", "abc")
    with pytest.raises(settings.SettingsError) as err:
        settings.current()
    assert "STACCATO_HANG_S='abc'" in str(err.value)
    assert "STACCATO_CLEANUP_FOR_S='0'" in str(err.value)


def test_worker_check_shows_the_default_key_file_in_use(
    temporal_server, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tester72: with no key setting, ``$STACCATO_HOME/secret.key`` is the key read, and
    ``worker --check`` showed ``STACCATO_SECRET_KEY_FILE=`` (empty)."""
    monkeypatch.delenv("STACCATO_SECRET_KEY", raising=False)  # the suite's key (conftest)
    monkeypatch.delenv("STACCATO_SECRET_KEY_FILE", raising=False)
    key_file = tmp_path / "secret.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    env = {"STACCATO_HOME": str(tmp_path)}
    run = run_cli("worker", "--check", address=temporal_server.address, env=env, timeout_s=60)
    assert run.returncode == 0, run
    shown = dict(line.split("=", 1) for line in run.stdout.splitlines())
    assert shown["STACCATO_SECRET_KEY_FILE"] == str(key_file)
    assert shown["STACCATO_SECRET_KEY"] == ""
