"""Whether what a failed run said it left behind (its ``left_behind`` text:
:func:`staccato.workflows.failures.left_behind`) is still there when a status is read.

A run writes that text once, as it ends (its clean-up gave up, or a cancel stopped
it), and ``status`` showed it ever after: also once the files were deleted by hand as
it advises, or removed by the next transfer to the destination (tester T14 read a
``left_behind`` entry that no longer existed). A local file destination's temp file
and journal are looked at here, where this process can see them: its directory
exists here (the same host as the worker, or a file system both see). Elsewhere (an
SFTP server, an S3 upload, a directory this process does not see) nothing can be
told from here, and the text stands ("may be left").
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from staccato.temp_names import journal_of

#: a local destination's temp file in a ``left_behind`` text
#: (``failures.partial_data``: ``the temp file PATH beside URL``, the URL canonical, so
#: percent-encoded: no space in it)
_LOCAL_TEMP = re.compile(r"the temp file (?P<temp>/.+?) beside (?P<url>file://\S+)")


def still_left(text: str | None) -> bool:
    """Whether the partial data ``text`` names may still be there.

    Returns:
        False only when ``text`` names a local destination's temp file whose
        directory this process sees and in which neither that temp file nor its
        journal exists any more (deleted by hand, removed by a later transfer); True
        otherwise (no text is False: nothing was left).
    """
    if not text:
        return False
    found = _LOCAL_TEMP.search(text)
    if found is None:
        return True
    temp = found.group("temp")
    target = unquote(urlsplit(found.group("url")).path)
    directory = os.path.dirname(temp)
    if not directory or os.path.dirname(target) != directory:
        return True  # not the temp file beside its target: nothing to tell by
    if not os.path.isdir(directory):
        return True  # not seen from here (another machine's file system)
    return os.path.lexists(temp) or os.path.lexists(journal_of(temp))


def shown_left_behind(text: str | None) -> str | None:
    """``text`` (a ``left_behind``) while what it names may still be there, else None."""
    return text if still_left(text) else None


#: how the ``left_behind`` of a run terminated by hand begins (then the words of
#: :func:`staccato.workflows.failures.left_behind`)
TERMINATED_LEAD = (
    "terminated (`temporal workflow terminate` or the UI: no workflow code runs after "
    "it, so the run did not remove its partial data; `staccato cancel` does): "
)


def terminated_left(
    destination: object, workflow_id: str, run_id: str, in_a_dataset: bool = False
) -> str | None:
    """A ``left_behind`` for a transfer's run (``run_id`` of ``workflow_id``) to
    ``destination`` (a canonical URL) that was terminated: a terminate runs no workflow
    code, so no clean-up ran and no memo says what was left (tester F4: the temp file
    and journal stayed, and ``status`` said nothing). A file or SFTP session's temp
    file is named by the run's session key (``staccato.workflows.calls.run_session_key``:
    the run's first write session: one it opened after losing that one is not named,
    though the next transfer sweeps it as well), in the words of ``failures.left_behind``
    (``failures.session_left_behind``), after :data:`TERMINATED_LEAD`; ``status``
    shows it only while it may be true (:func:`shown_left_behind`: a local one swept
    by the next transfer, or never made because the run was terminated before its
    ``prepare``, is not said). ``in_a_dataset``: the run is a dataset's large file.
    None for S3 or another scheme (an upload's id is in the run's history only: the
    client reads it there, ``StaccatoClient._terminated_left``), or a ``destination``
    that is not a string (a memo another client wrote)."""
    if not isinstance(destination, str):
        return None
    from staccato.workflows.calls import run_session_key
    from staccato.workflows.failures import session_left_behind

    text = session_left_behind(destination, run_session_key(workflow_id, run_id), in_a_dataset)
    return None if text is None else TERMINATED_LEAD + text


def unanswered_prepare(destination: object, error: str | None) -> str | None:
    """A ``left_behind`` for a run to ``destination`` (a canonical URL) that ended
    (``error``: its failure, in words) while its ``prepare`` attempt had no answer from
    an S3 server (:func:`staccato.workflows.failures.timed_out_text` names the step):
    that attempt's CreateMultipartUpload may be carried out when the server answers,
    opening an upload no one knows the id of. The attempt aborts it itself when its
    answer comes past its deadline (``staccato.activities.transfer.unanswerable``),
    unless its worker is gone; the next transfer to the destination aborts any upload
    left on that key. None for another destination or failure, or a ``destination``
    that is not a string (a memo another client wrote: ``list`` reads every run)."""
    if not isinstance(destination, str) or not destination.startswith("s3://") or not error:
        return None
    if "prepare attempt" not in error or "did not answer" not in error:
        return None
    return unanswered_upload(
        destination,
        "the prepare attempt that was under way",
        "the next transfer to this destination aborts it",
    )


def unanswered_upload(destination: str, attempt: str, removed_by: str) -> str:
    """The words for a multipart upload of ``destination`` (an ``s3://`` URL) that
    ``attempt`` (a phrase: which prepare attempt) may open when its S3 server answers
    at last: CreateMultipartUpload carried out after the run stopped waiting, so no one
    holds the upload's id. ``removed_by``: what removes it (a phrase). Shared by the
    memo a cancelled run writes (:mod:`staccato.workflows.failures`) and the text the
    client derives for a failed run (:func:`unanswered_prepare`)."""
    return (
        f"a multipart upload of {destination} may be opened when its server answers "
        f"{attempt} (it has no known id: ListMultipartUploads on that key shows it, "
        "AbortMultipartUpload removes it; the attempt aborts it itself if its worker "
        f"still runs); {removed_by}"
    )
