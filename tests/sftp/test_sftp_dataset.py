"""Datasets through SFTP: a local tree -> an SFTP directory -> a local tree compares
equal (names, sizes, checksums), with nested directories created on the server, a
large file through a child transfer, a symbolic link followed and a broken one failed
with its reason."""

from __future__ import annotations

import os
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import SyncLevel, TransferOptions
from tests.dataset_checks import (
    MiB,
    check_links_into,
    links_into,
    make_tree,
    run_dataset,
    tree,
    wait_dataset,
)
from tests.helpers import run_cli

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=2)


async def test_file_to_sftp_to_file_round_trip(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    source, remote, back = data_dir / "src", data_dir / "remote", data_dir / "back"
    source.mkdir()
    files = make_tree(source, large=3 * MiB + 1)
    os.symlink("a/one", source / "link-to-one")
    os.symlink("missing", source / "broken-link")
    up = await run_dataset(
        sftp_client, str(source), sftp_url(remote), options=OPTIONS, small_file_max=1 * MiB
    )
    assert up.state == DatasetState.completed_with_errors, up
    assert [f.name for f in up.failures] == ["broken-link"]
    assert "broken symbolic link" in up.failures[0].reason
    assert up.files_done == len(files) + 1
    down = await run_dataset(
        sftp_client, sftp_url(remote), str(back), options=OPTIONS, small_file_max=1 * MiB
    )
    assert down.state == DatasetState.completed, down
    expected = tree(source)
    assert tree(remote) == expected == tree(back)
    assert not (back / "link-to-one").is_symlink()  # followed: a copy of its target
    again = await run_dataset(
        sftp_client,
        str(source),
        sftp_url(remote),
        options=OPTIONS.model_copy(update={"sync_level": SyncLevel.mtime}),
        small_file_max=1 * MiB,
    )
    assert again.files_done == 0 and again.files_skipped == len(files) + 1, again


def test_a_missing_source_directory_is_a_usage_error(
    temporal_server, sftp_worker, sftp_url, data_dir: Path
) -> None:
    """As a missing local directory and an S3 prefix no key starts with: exit 2 naming
    the URL, nothing created at the destination; an empty directory copies nothing."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    missing = sftp_url(data_dir / "no-such-dir")
    done = run_cli("cp", "-r", "-q", missing, str(data_dir / "out"), **args)
    assert done.returncode == 2, done
    assert missing in done.stderr and "no such directory" in done.stderr, done.stderr
    assert not (data_dir / "out").exists()
    (data_dir / "empty").mkdir()
    empty = run_cli("cp", "-r", "-q", sftp_url(data_dir / "empty"), str(data_dir / "out"), **args)
    assert empty.returncode == 0, empty
    assert not (data_dir / "out").exists()


async def test_a_missing_sftp_root_submitted_fails_naming_it_and_shows_no_share(
    temporal_server, sftp_client: StaccatoClient, sftp_worker, sftp_url, data_dir: Path
) -> None:
    """``submit_dataset`` (and ``submit -r``) of an SFTP root under directories that do
    not exist either (the tester's ``sftp://user@host:port/no/such/dir/``): the client
    does not speak SFTP, so the dataset starts and then fails. Its reason names the URL
    and says it does not exist; its status showed "bytes_done 0 B (100%)" for a
    failed dataset that copied nothing, and the reason said only "no such directory"."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    missing = sftp_url(data_dir / "no" / "such" / "dir") + "/"
    dataset = await submit_dataset(sftp_client, missing, str(data_dir / "out"))
    final = await wait_dataset(sftp_client, dataset, timeout_s=120)
    assert final.state == DatasetState.failed, final
    assert final.error is not None, final
    assert missing.rstrip("/") in final.error and "does not exist" in final.error, final
    shown = run_cli("status", dataset, **args)
    assert shown.returncode == 0, shown
    assert "100%" not in shown.stdout, shown.stdout
    assert "does not exist" in shown.stdout, shown.stdout
    followed = run_cli("cp", "-r", "-q", missing, str(data_dir / "out"), **args)
    assert followed.returncode != 0, followed
    assert missing.rstrip("/") in followed.stderr, followed.stderr
    assert "does not exist" in followed.stderr, followed.stderr
    assert not (data_dir / "out").exists()


def test_a_file_given_to_cp_r_is_a_usage_error(
    temporal_server, sftp_worker, sftp_url, data_dir: Path
) -> None:
    """``cp -r`` of an SFTP file exits 2 as for a local file or an S3 object (one rule:
    a source root that is a file is a usage error), naming the URL and the fix (drop
    -r); nothing is created at the destination. It exited 1."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    (data_dir / "keep.txt").write_bytes(b"keep")
    source = sftp_url(data_dir / "keep.txt")
    done = run_cli("cp", "-r", "-q", source, str(data_dir / "out"), **args)
    assert done.returncode == 2, done
    assert f"source {source} is a file, not a directory" in done.stderr, done.stderr
    assert "drop -r" in done.stderr, done.stderr
    assert not (data_dir / "out").exists()


def test_a_link_into_the_destination_root_is_not_followed(
    temporal_server, sftp_worker, sftp_url, data_dir: Path
) -> None:
    """SFTP to SFTP on one server, a source tree with links (on the server) to the
    destination root, into it and to the directory above it, copied twice: the links
    are not followed (the server resolves them: REALPATH), each fails naming the
    root, the real files are copied once, exit 1 (the second run used to copy the
    destination into itself, one level deeper)."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    work = Path(os.path.realpath(data_dir)) / "work"
    source, destination, real_files = links_into(work)
    check_links_into(
        sftp_url(source),
        destination,
        sftp_url(destination),
        real_files,
        root_made_first=True,
        **args,
    )
