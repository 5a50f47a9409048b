"""The simulator's page bodies: size, type, charset trouble, without a server."""

from __future__ import annotations

import pytest

from steadfast_dev.sim import pages

pytestmark = pytest.mark.unit

PATH = "news.example.org/tidal-energy-outlook/2"


def _whole(body: pages.Body) -> bytes:
    data = b"".join(body.chunks)
    assert len(data) == body.length
    return data


def test_a_page_is_about_the_words_of_its_path() -> None:
    html = _whole(pages.page_body(PATH)).decode()
    assert html.startswith("<!doctype html>")
    assert "<h1>Tidal Energy Outlook</h1>" in html
    assert html.count("<p>") == 8
    assert "news" not in html  # the host is not part of the subject
    assert pages.subject("/example.com/a-b/c_d/3") == "a b c d"


@pytest.mark.parametrize("size", [1, 100, 5000, 65536, 300_001])
def test_a_sized_page_is_exactly_that_long(size: int) -> None:
    body = pages.page_body(PATH, size=size, chunk_bytes=4096)
    data = _whole(body)
    assert len(data) == size
    assert data.decode()  # still text, cut anywhere inside ASCII
    if size > 4096:
        assert (
            max(len(c) for c in pages.page_body(PATH, size=size, chunk_bytes=4096).chunks) == 4096
        )


def test_an_undecodable_page_breaks_utf8_in_the_middle() -> None:
    data = _whole(pages.page_body(PATH, size=10_000, undecodable=True))
    with pytest.raises(UnicodeDecodeError) as caught:
        data.decode()
    assert caught.value.start == 5000


def test_other_types_get_binary_bodies() -> None:
    png = _whole(pages.page_body(PATH, content_type="image/png", size=70_000))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    blob = _whole(pages.page_body(PATH, content_type="application/octet-stream"))
    assert len(blob) == 4096
    assert not blob.startswith(b"\x89PNG")
    assert pages.is_text("text/plain")
    assert pages.is_text("application/json")
    assert not pages.is_text("image/png")


def test_page_urls_keep_the_host_and_path_of_the_external_address() -> None:
    local = pages.page_url("http://127.0.0.1:8089/", "https://news.example.org/tidal/2")
    assert local == "http://127.0.0.1:8089/pages/news.example.org/tidal/2"
