"""The words of a step that hung past ``--retry-for`` (``failures.timed_out_text`` of
``failures.step_endpoints``) name only what may not answer (tester T14): a local
file is no server that accepts connections and does not answer, so with one local
side only the remote one is named, and a step between local files names its worker.
The remote-and-local case against a real stopped S3 server:
``tests/s3/test_s3_hung_server.py::test_s3_source_hung_under_publish_fails_naming_it``."""

from __future__ import annotations

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
