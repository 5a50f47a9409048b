"""fetch_page's decisions without a server: which addresses, types and texts the model gets."""

from __future__ import annotations

import httpx
import pydantic
import pytest
from tests.support.abandoned import no_abandoned_async_work  # noqa: F401  (autouse)

from steadfast_contract.budget import CHARS_PER_TOKEN, token_chars
from steadfast_contract.context import MAX_TOOL_RESULT_CHARS
from steadfast_contract.models import FetchRules
from steadfast_contract.researchspec import FetchPageSpec
from steadfast_dev.sim.agent import claim
from steadfast_dev.sim.pages import page_html
from steadfast_worker import fetching
from steadfast_worker.fetching import content_type_refusal, domain_refusal
from steadfast_worker.pagetext import MAX_RESULT_CHARS, TRUNCATED, cap, head_within, page_text

pytestmark = pytest.mark.unit

ANY = FetchRules()
DENY_EXAMPLE = FetchRules(deny_domains=["example.com"])
ALLOW_EXAMPLE = FetchRules(allow_domains=["example.com"])


@pytest.mark.parametrize(
    ("url", "rules", "refused"),
    [
        # Schemes and hosts.
        ("https://example.com/a", ANY, False),
        ("http://example.com", ANY, False),
        ("ftp://example.com/a", ANY, True),
        ("file:///etc/passwd", ANY, True),
        ("javascript:alert(1)", ANY, True),
        ("data:text/html,<p>hi</p>", ANY, True),
        ("//example.com/a", ANY, True),
        ("example.com/a", ANY, True),
        ("http:///a", ANY, True),
        ("", ANY, True),
        ("http://ex%61mple.com/", ANY, True),
        ("http://example.com:99999/", ANY, True),
        # Deny: the host and its subdomains, not look-alikes.
        ("https://example.com/a", DENY_EXAMPLE, True),
        ("https://news.example.com/a", DENY_EXAMPLE, True),
        ("https://a.b.example.com/a", DENY_EXAMPLE, True),
        ("https://notexample.com/a", DENY_EXAMPLE, False),
        ("https://example.com.evil.org/a", DENY_EXAMPLE, False),
        ("https://example.org/a", DENY_EXAMPLE, False),
        # Case and the trailing dot do not escape a rule.
        ("https://EXAMPLE.Com/a", DENY_EXAMPLE, True),
        ("https://example.com./a", DENY_EXAMPLE, True),
        ("https://news.example.com./a", DENY_EXAMPLE, True),
        ("https://x.example.com/", FetchRules(deny_domains=["Example.COM."]), True),
        # Userinfo: the host dialed is the one judged.
        ("http://example.com@evil.com/", ALLOW_EXAMPLE, True),
        ("http://evil.com@example.com/", ALLOW_EXAMPLE, False),
        ("http://example.com:80@evil.com/", ALLOW_EXAMPLE, True),
        ("http://user:pw@example.com/", DENY_EXAMPLE, True),
        # Allow: only matching hosts; deny is checked first.
        ("https://example.com/", ALLOW_EXAMPLE, False),
        ("https://docs.example.com/", ALLOW_EXAMPLE, False),
        ("https://example.org/", ALLOW_EXAMPLE, True),
        (
            "https://ads.example.com/",
            FetchRules(allow_domains=["example.com"], deny_domains=["ads.example.com"]),
            True,
        ),
        ("https://example.com/", FetchRules(["example.com"], ["example.com"]), True),
        # *.example.com: subdomains only.
        ("https://example.com/", FetchRules(allow_domains=["*.example.com"]), True),
        ("https://a.example.com/", FetchRules(allow_domains=["*.example.com"]), False),
        ("https://example.com/", FetchRules(deny_domains=["*.example.com"]), False),
        ("https://a.example.com/", FetchRules(deny_domains=["*.example.com"]), True),
        # host:port: the port must match too, the scheme's default implied.
        ("http://example.com:8080/", FetchRules(allow_domains=["example.com:8080"]), False),
        ("http://example.com/", FetchRules(allow_domains=["example.com:8080"]), True),
        ("http://example.com:9090/", FetchRules(allow_domains=["example.com:8080"]), True),
        ("http://example.com/", FetchRules(allow_domains=["example.com:80"]), False),
        ("https://example.com/", FetchRules(allow_domains=["example.com:80"]), True),
        ("https://example.com/", FetchRules(allow_domains=["example.com:443"]), False),
        ("https://example.com:443/", FetchRules(allow_domains=["example.com:443"]), False),
        ("http://a.example.com:8080/", FetchRules(deny_domains=["example.com:8080"]), True),
        ("http://a.example.com:8081/", FetchRules(deny_domains=["example.com:8080"]), False),
        ("http://example.com:8080/", FetchRules(deny_domains=["example.com"]), True),
        # IP addresses: exact, whatever the spelling a resolver accepts.
        ("http://127.0.0.1:8000/", FetchRules(deny_domains=["127.0.0.1"]), True),
        ("http://127.1/", FetchRules(deny_domains=["127.0.0.1"]), True),
        ("http://0x7f.0.0.1/", FetchRules(deny_domains=["127.0.0.1"]), True),
        ("http://2130706433/", FetchRules(deny_domains=["127.0.0.1"]), True),
        ("http://0177.0.0.1/", FetchRules(deny_domains=["127.0.0.1"]), True),
        ("http://127.0.0.1./", FetchRules(deny_domains=["127.0.0.1"]), True),
        ("http://127.0.0.1/", FetchRules(deny_domains=["0.0.1"]), False),
        ("http://127.0.0.1/", FetchRules(deny_domains=["*.0.0.1"]), False),
        ("http://127.0.0.2/", FetchRules(deny_domains=["127.0.0.1"]), False),
        ("http://127.0.0.1/", FetchRules(allow_domains=["localhost"]), True),
        ("http://localhost:8000/", FetchRules(allow_domains=["localhost"]), False),
        ("http://localhost:8000/", FetchRules(allow_domains=["127.0.0.1"]), True),
        ("http://[::1]:8000/", FetchRules(allow_domains=["127.0.0.1"]), True),
        # IPv6 addresses, bracketed as a URL writes them; any spelling of the address.
        ("http://[fd00::1]:8080/", FetchRules(allow_domains=["[fd00::1]:8080"]), False),
        ("http://[fd00:0:0::1]/", FetchRules(allow_domains=["[fd00::1]"]), False),
        ("http://[FD00::1]/", FetchRules(deny_domains=["[fd00::1]"]), True),
        ("http://[fd00::2]/", FetchRules(allow_domains=["[fd00::1]"]), True),
        ("http://[fd00::1]:8081/", FetchRules(allow_domains=["[fd00::1]:8080"]), True),
        ("http://[::ffff:10.0.0.7]/", FetchRules(allow_domains=["[::ffff:a00:7]"]), False),
        ("http://10.0.0.7/", FetchRules(allow_domains=["[::ffff:10.0.0.7]"]), True),
        ("http://999.0.0.1/", ANY, True),
        # Internationalised names are judged in their ASCII form.
        ("https://bücher.example.com/", DENY_EXAMPLE, True),
        ("https://xn--bcher-kva.de/", FetchRules(deny_domains=["xn--bcher-kva.de"]), True),
        ("https://bücher.de/", FetchRules(deny_domains=["xn--bcher-kva.de"]), True),
    ],
)
def test_domain_refusal(url: str, rules: FetchRules, refused: bool) -> None:
    reason = domain_refusal(url, rules)
    assert (reason is not None) == refused, reason
    if reason is not None:
        assert reason.strip()


def test_a_refusal_names_the_host_and_the_rule() -> None:
    assert domain_refusal("https://news.example.com/", DENY_EXAMPLE) == (
        "news.example.com is a denied domain (example.com)"
    )
    assert domain_refusal("https://example.org/", ALLOW_EXAMPLE) == (
        "example.org is not among the allowed domains"
    )
    assert "ftp" in (domain_refusal("ftp://example.com/", ANY) or "")


@pytest.mark.parametrize(
    ("content_type", "refused"),
    [
        ("text/html", False),
        ("text/html; charset=utf-8", False),
        ("TEXT/HTML;charset=ISO-8859-1", False),
        ("text/plain", False),
        ("text/markdown", False),
        ("text/csv", False),
        ("application/xhtml+xml", False),
        ("application/json", False),
        ("application/json; charset=utf-8", False),
        ("application/xml", False),
        ("application/rss+xml", False),
        ("application/atom+xml", False),
        ("application/ld+json", False),
        ("image/png", True),
        ("image/svg", True),
        ("application/pdf", True),
        ("application/octet-stream", True),
        ("application/zip", True),
        ("application/jsonx", True),
        ("video/mp4", True),
        ("", True),
        ("  ;charset=utf-8", True),
    ],
)
def test_content_type_refusal(content_type: str, refused: bool) -> None:
    reason = content_type_refusal(content_type)
    assert (reason is not None) == refused, reason


def test_a_refused_type_is_named() -> None:
    assert content_type_refusal("image/png") == "the page is image/png, not text"


def test_html_paragraphs_headings_and_list_items_each_get_a_line() -> None:
    html = b"""<!doctype html><html><head><title>Tidal  power</title>
    <meta charset="utf-8"><style>p { color: red }</style>
    <script>var secret = "<p>not text</p>";</script></head>
    <body><nav><a href="/">Home</a></nav>
    <h1>Tidal   energy</h1>
    <p>First paragraph,
       wrapped in the source.</p><p>Second &amp; last &lt;paragraph&gt;.</p>
    <ul><li>one</li><li>two<br>lines</li></ul>
    <div>A <b>bold</b> <a href="x">link</a> inside.</div>
    <noscript>Enable JavaScript</noscript><svg><text>drawn</text></svg>
    <template><p>hidden</p></template>tail text
    </body></html>"""
    assert page_text(html, "text/html; charset=utf-8").splitlines() == [
        "Tidal power",
        "Home",
        "Tidal energy",
        "First paragraph, wrapped in the source.",
        "Second & last <paragraph>.",
        "one",
        "two",
        "lines",
        "A bold link inside.",
        "tail text",
    ]


def test_an_html_page_without_a_closed_head_keeps_its_body() -> None:
    html = b"<html><head><title>T</title><body><p>Body text here.</p>"
    assert page_text(html, "text/html") == "T\nBody text here."


def test_the_simulators_page_gives_one_line_per_paragraph() -> None:
    html = page_html("/news.example.org/tidal-energy-outlook/2")
    lines = page_text(html.encode(), "text/html; charset=utf-8").splitlines()
    assert lines[:2] == ["Tidal Energy Outlook", "Tidal Energy Outlook"]
    assert len(lines) == 2 + 8
    assert all("<" not in line and line.endswith(".") for line in lines[2:])
    assert all(len(line.split()) >= 24 for line in lines[2:])
    # The simulated model records its finding from the text it was given.
    found = claim("\n".join(lines), "tidal energy outlook")
    assert found in lines[2]
    assert found.startswith(lines[2][:20])


def test_text_that_is_not_html_keeps_its_lines_with_whitespace_collapsed() -> None:
    body = b'{\n  "a":   1,\n\n\n  "b": "<p>x</p>"\n}\n'
    assert page_text(body, "application/json") == '{\n"a": 1,\n"b": "<p>x</p>"\n}'
    assert page_text(b"  one\t two \r\nthree  ", "text/plain") == "one two\nthree"


def test_the_charset_of_the_header_decodes_and_bad_bytes_become_replacement_characters() -> None:
    assert page_text("café".encode("latin-1"), "text/plain; charset=ISO-8859-1") == "café"
    assert page_text("café".encode("latin-1"), 'text/plain; charset="latin1"') == "café"
    assert page_text("café".encode(), "text/plain") == "café"
    assert page_text("café".encode(), "text/plain; charset=no-such-charset") == "café"
    assert page_text(b"ab\xff\xfecd", "text/html; charset=utf-8") == "ab\ufffd\ufffdcd"


def test_a_long_page_is_cut_at_the_cap_and_says_so() -> None:
    paragraph = "<p>" + "A sentence that states one finding about tides. " * 20 + "</p>"
    body = (paragraph * 200).encode()
    text = page_text(body, "text/html")
    assert len(body) > 10 * MAX_RESULT_CHARS
    assert 0.9 * MAX_RESULT_CHARS <= len(text) <= MAX_RESULT_CHARS
    assert text.endswith("\n" + TRUNCATED)
    assert text.startswith("A sentence that states one finding")
    assert text.removesuffix(TRUNCATED).rstrip().endswith(("tides.", "finding", "about"))
    short = page_text(body, "text/html", limit_chars=200)
    assert len(short) <= 200
    assert short.endswith(TRUNCATED)
    exact = "x" * MAX_RESULT_CHARS
    assert page_text(exact.encode(), "text/plain") == exact


@pytest.mark.parametrize(
    "sentence",
    [
        "潮汐能在过去一年中发展迅速\uff0c主要由早期的企业试点推动\u3002",  # Chinese
        "Приливная энергетика быстро развивалась в прошлом году. ",  # Russian
        "Tides 🌊 rise, costs 📉 fall. ",  # emoji: two UTF-16 units each
        "Ebbe und Flut — Gezeitenkraft wächst schnell. ",  # mostly ASCII
    ],
)
def test_a_tool_result_is_capped_in_tokens_in_any_script(sentence: str) -> None:
    """A deep run plans its context window on each tool result counting at most
    MAX_TOOL_RESULT_CHARS of the budget's characters (steadfast_contract.context).
    Capped by length, 16,000 characters of Chinese went through whole: about 16,000
    tokens where the plan allowed 4,000, so eight such pages in one turn could push
    the next prompt past the window, and the run lost its report."""
    long = sentence * 2000
    capped = cap(long, MAX_TOOL_RESULT_CHARS)
    assert token_chars(capped) <= MAX_TOOL_RESULT_CHARS
    assert token_chars(capped) >= 0.75 * MAX_TOOL_RESULT_CHARS  # cut near the limit
    assert capped.endswith("\n" + TRUNCATED)
    assert long.startswith(capped.removesuffix(TRUNCATED).rstrip())
    page = page_text(f"<p>{long}</p>".encode(), "text/html; charset=utf-8")
    assert token_chars(page) <= MAX_RESULT_CHARS
    fits = head_within(long, 400)
    assert token_chars(fits) <= 400 < token_chars(long[: len(fits) + 1])


def test_text_within_the_cap_is_kept_whole_in_any_script() -> None:
    chinese = "潮" * (MAX_TOOL_RESULT_CHARS // CHARS_PER_TOKEN)
    assert cap(chinese, MAX_TOOL_RESULT_CHARS) == chinese
    assert cap(chinese + "潮", MAX_TOOL_RESULT_CHARS).endswith(TRUNCATED)
    assert head_within("ab🌊", 5) == "ab"  # the emoji counts two tokens' worth
    assert head_within("ab🌊", 10) == "ab🌊"


PUBLIC, PRIVATE, NEVER = "public", "private", "never"


@pytest.mark.parametrize(
    ("addresses", "kind"),
    [
        (["93.184.215.14"], PUBLIC),
        (["2606:2800:220:1::1", "93.184.215.14"], PUBLIC),
        (["::ffff:93.184.215.14"], PUBLIC),  # mapped: judged as the IPv4 address
        (["64:ff9b::5db8:d70e"], PUBLIC),  # NAT64 of 93.184.215.14
        (["169.254.169.254"], NEVER),  # the clouds' instance metadata
        (["93.184.215.14", "169.254.0.1"], NEVER),  # any address of the name counts
        (["fe80::1%eth0"], NEVER),
        (["::ffff:169.254.169.254"], NEVER),
        (["64:ff9b::a9fe:a9fe"], NEVER),  # NAT64 of 169.254.169.254
        (["0.0.0.0"], NEVER),
        (["::"], NEVER),
        (["224.0.0.1"], NEVER),
        (["127.0.0.1"], PRIVATE),
        (["::1"], PRIVATE),
        (["10.0.0.7"], PRIVATE),  # a Service's cluster IP
        (["172.16.4.1"], PRIVATE),
        (["192.168.1.2"], PRIVATE),
        (["100.64.0.9"], PRIVATE),  # shared address space (CGNAT, some pod networks)
        (["fd12:3456::1"], PRIVATE),  # unique-local
        (["::ffff:10.0.0.7"], PRIVATE),
        (["64:ff9b::a00:7"], PRIVATE),  # NAT64 of 10.0.0.7
        (["2002:a00:7::1"], PRIVATE),  # 6to4 of 10.0.0.7
        (["93.184.215.14", "10.0.0.7"], PRIVATE),  # one private answer is enough
        (["not an address"], NEVER),  # a resolver's nonsense is not dialed either
    ],
)
def test_only_public_addresses_are_fetched_unless_the_host_is_allowed_private(
    addresses: list[str], kind: str
) -> None:
    """Public: fetched. Private: fetched only for a host ``allowPrivateHosts`` names.
    Never: link-local (instance metadata), unspecified, multicast, whatever the rules."""
    by_default = fetching.address_refusal(addresses)
    allowed = fetching.address_refusal(addresses, private_allowed=True)
    expected = {PUBLIC: (True, True), PRIVATE: (False, True), NEVER: (False, False)}[kind]
    assert (by_default is None, allowed is None) == expected, (by_default, allowed)
    if kind == PRIVATE:
        assert "allowPrivateHosts names it" in str(by_default)


@pytest.mark.parametrize(
    ("rule", "host", "port", "allowed"),
    [
        ("[fd00::1]:8080", "fd00::1", 8080, True),
        ("[fd00::1]", "fd00::1", 443, True),
        ("[fd00::1]:8080", "fd00::1", 8081, False),
        ("[fd00::1]", "fd00::2", 80, False),
    ],
)
async def test_allow_private_hosts_names_an_ipv6_address(
    rule: str, host: str, port: int, allowed: bool
) -> None:
    """A unique-local IPv6 address is fetched only when the rule names it (and its port)."""
    rules = FetchRules(allow_private_hosts=[rule])
    url = httpx.URL(f"http://[{host}]:{port}/")
    if allowed:
        await fetching._pinned(url, rules, _no_resolver)
    else:
        with pytest.raises(fetching.FetchRefused, match="allowPrivateHosts"):
            await fetching._pinned(url, rules, _no_resolver)


async def _no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"an address is not resolved: {host}")


@pytest.mark.parametrize(
    ("rule", "valid"),
    [
        ("[fd00::1]", True),
        ("[fd00::1]:8080", True),
        ("[::ffff:10.0.0.7]", True),
        ("example.com:8080", True),
        ("[fd00::g]", False),
        ("[fd00:::1]", False),
        ("[10.0.0.7]", False),
        ("*.[fd00::1]", False),
        ("[FD00::1]", False),  # lower case, as for names
        ("fd00::1", False),  # unbracketed, a port could not be told apart
    ],
)
def test_a_rule_is_a_name_or_a_bracketed_ipv6_address(rule: str, valid: bool) -> None:
    for field in ("allowDomains", "denyDomains", "allowPrivateHosts"):
        try:
            FetchPageSpec.model_validate({field: [rule]})
        except pydantic.ValidationError:
            assert not valid, (field, rule)
        else:
            assert valid, (field, rule)
