"""A dataset re-run at ``--sync-level`` to an SFTP directory (the tester's case), its
worker SIGKILLed while a batch with skipped files is under way: the retried batch
counts the files the killed attempt found up to date as skipped, not as copied."""

from __future__ import annotations

from pathlib import Path

from tests.servers.sshd import SshdServer
from tests.test_dataset_sync_crash import empty_destination_with_kill, sync_rerun_with_kill


async def test_sync_rerun_to_sftp_worker_sigkill_counts_up_to_date_files_as_skipped(
    temporal_server,
    sftp_url,
    sshd_server: SshdServer,
    env_worker_env: dict[str, str],
    data_dir: Path,
) -> None:
    # SFTP keeps no change time: the files the killed attempt copied past its last
    # checkpoint count as up to date
    await sync_rerun_with_kill(
        temporal_server,
        data_dir,
        sftp_url,
        env_worker_env,
        change_time=False,
        server_pid=sshd_server.pid,
    )


async def test_sync_to_empty_sftp_destination_worker_killed_keeps_the_rule_without_ctime(
    temporal_server,
    sftp_url,
    sshd_server: SshdServer,
    env_worker_env: dict[str, str],
    data_dir: Path,
) -> None:
    """An empty SFTP destination, the worker killed mid-batch: SFTP tells no change
    time, so the files the killed attempt published past its last checkpoint still
    count as up to date (the limit README states); all others as copied."""
    await empty_destination_with_kill(
        temporal_server,
        data_dir,
        sftp_url,
        env_worker_env,
        change_time=False,
        server_pid=sshd_server.pid,
    )
