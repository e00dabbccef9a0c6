"""The words of a step that hung past ``--retry-for`` (``failures.timed_out_text`` of
``failures.step_endpoints``) name only what may not answer (tester T14): a local
file is no server that accepts connections and does not answer, so with one local
side only the remote one is named, and a step between local files names its worker.
The remote-and-local case against a real stopped S3 server:
``tests/s3/test_s3_hung_server.py::test_s3_source_hung_under_publish_fails_naming_it``."""

from __future__ import annotations

from staccato.cli.render import progress_text, status_lines
from staccato.models import TransferState, TransferStatus
from staccato.step_endpoints import step_endpoints_named
from staccato.workflows.failures import remote_endpoints, step_endpoints, timed_out_text

S3 = "s3://bucket/key"
SFTP = "sftp://127.0.0.1:2222/data/f"
LOCAL = "file:///data/f"


def test_a_local_side_is_not_named_as_a_server_that_did_not_answer() -> None:
    where = step_endpoints("publish", S3, LOCAL)
    assert where == S3
    said = timed_out_text("publish", where, None) or ""
    assert said.startswith(f"{S3} did not answer"), said
    assert "file://" not in said, said
    assert step_endpoints("copy_stream", LOCAL, SFTP) == SFTP
    assert step_endpoints("copy_stream", S3, SFTP) == f"{S3} or {SFTP}"


def test_a_step_between_local_files_names_its_worker() -> None:
    where = step_endpoints("publish", LOCAL, "file:///elsewhere/f")
    said = timed_out_text("publish", where, None) or ""
    assert said.startswith("its worker did not answer"), said
    assert "file://" not in said and "accepts connections" not in said, said
    assert "frozen, overloaded or killed" in said, said


def test_a_datasets_roots_keep_only_the_servers() -> None:
    assert remote_endpoints("file:///src", S3) == [S3]
    assert remote_endpoints("file:///src", "file:///dst") == []


def test_a_waiting_step_names_its_servers_with_their_roles() -> None:
    """``status`` of a short step whose attempt waits (``stalled_step``) names the
    servers the step talks to, with their roles, never a local file; the real stopped
    server: ``tests/s3/test_s3_hung_server.py::
    test_status_of_a_hung_prepare_names_the_step_and_its_destination``."""
    assert step_endpoints_named("prepare", LOCAL, S3) == f"{S3} (the destination)"
    assert step_endpoints_named("stat", S3, LOCAL) == f"{S3} (the source)"
    assert step_endpoints_named("publish", S3, SFTP) == (
        f"{S3} (the source) or {SFTP} (the destination)"
    )
    assert step_endpoints_named("publish", S3, S3) == f"{S3} (the source and the destination)"
    assert step_endpoints_named("cleanup", S3, LOCAL) == ""


def test_a_waiting_step_on_local_files_blames_the_file_system_not_a_server() -> None:
    status = TransferStatus(
        id="t",
        state=TransferState.running,
        source=S3,
        destination=LOCAL,
        bytes_total=1,
        bytes_done=1,
        rate_bytes_per_s=None,
        eta_s=None,
        streams=1,
        chunk_size=1,
        checksum=None,
        error=None,
        idle_since="2026-12-06T15:40:00.000Z",
        stalled_step="cleanup",
    )
    (line,) = [x for x in status_lines(status) if x.startswith("stalled")]
    assert "cleanup: waiting for the worker's file system since 2026-12-06T15:40" in line, line
    assert "file://" not in line and "accepts connections" not in line, line
    assert "stalled: cleanup: waiting for the worker's file system" in progress_text(status)


def test_the_hang_limit_names_what_set_it() -> None:
    """A limit the heartbeat timeout set is not told as STACCATO_HANG_S's (tester72:
    "limit 12 s, STACCATO_HANG_S" with STACCATO_HANG_S 30 and a 20 s heartbeat)."""
    from staccato.activities.retry_deadline import hang_limit

    limit, by = hang_limit(30.0, 20.0)
    assert limit == 12.0 and "STACCATO_HANG_S" not in by.partition(",")[0], by
    assert "of the 20 s heartbeat timeout" in by, by
    assert hang_limit(30.0, None) == (30.0, "STACCATO_HANG_S")
    assert hang_limit(10.0, 60.0) == (10.0, "STACCATO_HANG_S")
