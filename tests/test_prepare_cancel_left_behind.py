"""What a transfer cancelled before its ``prepare`` answered says it may leave
(``staccato.workflows.failures.unanswered_prepare_left``, the memo's ``left_behind``)
and that ``status`` says it only while it may be true: a local destination's temp file
is named by the run's session key, and once no such file (nor its journal) exists the
text is no longer shown. Pure functions and a real directory."""

from __future__ import annotations

from pathlib import Path

from staccato.leftovers import shown_left_behind
from staccato.temp_names import journal_of, session_temp
from staccato.urls import parse_url
from staccato.workflows.failures import unanswered_prepare_left

KEY = "01a24c9c-7b6f-7c11-9a02-ca70d1e178e8"


def test_a_local_destination_names_its_temp_file_shown_while_it_exists(tmp_path: Path) -> None:
    destination = parse_url(str(tmp_path / "c1.bin")).canonical
    text = unanswered_prepare_left(destination, 5, 4, KEY)
    temp = session_temp(str(tmp_path / "c1.bin"), KEY)
    assert text is not None and temp in text and "next transfer" in text, text
    assert shown_left_behind(text) is None  # nothing was created
    Path(temp).write_bytes(b"x")
    assert shown_left_behind(text) == text
    Path(temp).unlink()
    Path(journal_of(temp)).write_bytes(b"")
    assert shown_left_behind(text) == text
    Path(journal_of(temp)).unlink()
    assert shown_left_behind(text) is None


def test_s3_says_an_upload_may_be_opened_unless_the_object_is_empty() -> None:
    lone = unanswered_prepare_left("s3://b/k.bin", 5, 4, KEY)
    assert lone is not None and "s3://b/k.bin" in lone and "next transfer" in lone, lone
    assert shown_left_behind(lone) == lone  # nothing here can tell
    in_a_dataset = unanswered_prepare_left("s3://b/k.bin", 5, 4, KEY, in_a_dataset=True)
    assert in_a_dataset is not None and "staccato cp" in in_a_dataset, in_a_dataset
    assert unanswered_prepare_left("s3://b/empty", 0, 4, KEY) is None  # opens no upload


def test_a_scheme_that_opens_nothing_says_nothing() -> None:
    assert unanswered_prepare_left("https://example.invalid/x", 5, 4, KEY) is None
