"""Pure functions of the HTTP endpoint: Retry-After values and URL redaction."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from staccato.endpoints.http import retry_after_s
from staccato.urls import redact


def test_retry_after_seconds_and_http_date() -> None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date (IMF-fixdate, or the obsolete
    RFC 850 / asctime forms); anything else is ignored (None)."""
    now = 1_700_000_000.0
    assert retry_after_s("2", now) == 2.0
    assert retry_after_s(" 120 ", now) == 120.0
    assert retry_after_s(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert retry_after_s(formatdate(now - 30, usegmt=True), now) == 0.0  # past: at once
    assert retry_after_s("Tuesday, 14-Nov-23 22:13:50 GMT", now) == pytest.approx(30.0)
    for bad in (None, "", "-1", "1.5", "²", "soon", "Mon, 99 Foo 2023 00:00:00 GMT"):
        assert retry_after_s(bad, now) is None, bad


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h.example/p?token=abc", "https://h.example/p?token=REDACTED"),
        (
            "https://b.s3.example/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00d",
            "https://b.s3.example/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED",
        ),
        ("http://h/p?bare-token", "http://h/p?REDACTED"),
        ("http://user:pw@h/p?a=1#frag", "http://REDACTED@h/p?a=REDACTED#REDACTED"),
        ("http://h:8080/p", "http://h:8080/p"),
        ("http://[::1/x?t=abc", "http://[::1/x?t=REDACTED"),
    ],
)
def test_redact_hides_every_query_value(url: str, shown: str) -> None:
    assert redact(url) == shown
