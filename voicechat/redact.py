"""Keep secrets and terminal control codes out of what voicechat says.

`scrub` is the one function every printed line goes through (the terminal calls it): it
masks the secrets this process knows (API keys it read, passwords in URLs it was given),
credentials written into URLs, ``?api-key=``-style query values and ``Bearer`` tokens, and
drops control characters (ESC, the other C0/C1 codes) except newline and tab. `short`
makes one line of untrusted text (a server's error body) fit for a message.
Standard library only: this is on the start-up path.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MAX_LINE = 400
"""Characters an error line may have (`limit`): an error must never quote a whole file."""

_known: set[str] = set()
_lock = threading.Lock()


class LazyPattern:
    """A regular expression compiled on first use: compiling these costs milliseconds that
    the start-up path (``ask`` until the request leaves) does not have to pay."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> object:
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


_URL_CREDENTIALS = LazyPattern(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@?#]+@")
_QUERY_SECRET = LazyPattern(
    r"(?i)([?&;](?:[a-z0-9_-]*(?:key|token|secret|password|passwd|pwd|signature|sig|auth)"
    r"[a-z0-9_-]*)=)[^&#\s]+"
)
_ASSIGNED_SECRET = LazyPattern(
    # NAME=value (env files, query-like text) and "name": "value" (JSON/YAML), where the name
    # says it is a secret; "API key: $VAR is set" names a variable and stays readable
    r"(?i)(\b[a-z0-9_]*(?:key|token|secret|password|passwd)[a-z0-9_]*\s*=\s*|"
    r"[\"']?\b[a-z0-9_]*(?:key|token|secret|password|passwd)[a-z0-9_]*[\"']?\s*:\s*[\"'])"
    r"(?!\*\*\*)[^\s'\",;&$]{4,}"
)
_KEY_SHAPE = LazyPattern(r"\b(sk|pk|rk|hf|gsk|xai)[-_][A-Za-z0-9_-]{12,}")
_BEARER = LazyPattern(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_CONTROL = LazyPattern(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
"""C0 and C1 controls (newline and tab kept), DEL, and lone surrogates (unprintable)."""
_CONTROL_AND_NEWLINES = LazyPattern(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPE_SEQUENCE = LazyPattern(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|.)"
    r"|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c]*[\x07\x9c]?",
    re.DOTALL,
)


MIN_SECRET = 8
"""Shorter values are not masked by value (they would cut ordinary words apart); the patterns
still mask them where they appear as credentials."""


def remember(secret: str | None) -> None:
    """Mask this value wherever it appears in a line we print (keys, URL passwords)."""
    if secret and len(secret) >= MIN_SECRET:
        with _lock:
            _known.add(secret)


def strip_controls(text: str) -> str:
    """Text with escape sequences and control characters removed; newline and tab kept.

    >>> strip_controls("\\x1b]0;pwned\\x07\\x1b[2Jok\\tyes\\r\\n")
    'ok\\tyes\\n'
    """
    if not text or (text.isprintable() and "\x1b" not in text):
        return text  # the common case, at the speed of one scan
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))


def scrub(text: str) -> str:
    """``text`` with every known secret masked and control characters removed.

    >>> scrub("GET https://bob:hunter2@example.com/v1?api-key=abc123&x=1")
    'GET https://***@example.com/v1?api-key=***&x=1'
    >>> scrub("Incorrect API key provided: Bearer sk-abcdef123456")
    'Incorrect API key provided: Bearer ***'
    >>> scrub("OPENAI_API_KEY=sk-proj-0123456789abcdef")
    'OPENAI_API_KEY=***'
    >>> scrub('{"api_key": "abcd1234"} # API key: $EXAMPLE_KEY is set')
    '{"api_key": "***"} # API key: $EXAMPLE_KEY is set'
    >>> scrub("api_key_env: OPENAI_API_KEY; API key: $EXAMPLE_KEY is set; password=hunter2")
    'api_key_env: OPENAI_API_KEY; API key: $EXAMPLE_KEY is set; password=***'
    >>> scrub("backend.api_key_env: unknown key; token=correcthorsebattery")
    'backend.api_key_env: unknown key; token=***'
    >>> scrub("\\x1b]0;pwned\\x07\\x1b[2Jclear\\tand\\nkeep")
    'clear\\tand\\nkeep'
    """
    if not text:
        return text
    text = _ESCAPE_SEQUENCE.sub("", text)
    text = _CONTROL.sub("", text)
    # Shapes first: a known secret masked inside a token would leave its tail unmatched by
    # them ("Bearer ***def123" when "sk-abc" was remembered), whatever taught us the secret.
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    text = _ASSIGNED_SECRET.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + " " + MASK, text)
    text = _KEY_SHAPE.sub(lambda m: m.group(1) + "-" + MASK, text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def limit(line: str, length: int = MAX_LINE) -> str:
    """At most ``length`` characters, marked with an ellipsis where cut."""
    return line if len(line) <= length else line[: length - 1] + "…"


def short(text: object, length: int = 160) -> str:
    """One scrubbed line of untrusted text (a server's error body, a profile value).

    >>> short("  line one\\n\\x1b[31mline two  ")
    'line one line two'
    """
    text = text if isinstance(text, str) else str(text)
    if len(text) > 20 * length:  # never scan megabytes for a message
        text = text[: 20 * length]
    line = " ".join(_CONTROL_AND_NEWLINES.sub(" ", _ESCAPE_SEQUENCE.sub("", text)).split())
    return limit(scrub(line), length)


def redact_url(url: str) -> str:
    """A URL fit for messages: credentials and secret query values masked.

    >>> redact_url("https://user:secret@example.com/v1")
    'https://***@example.com/v1'
    >>> redact_url("http://127.0.0.1:11434")
    'http://127.0.0.1:11434'
    >>> redact_url("https://h/v1?api-key=k1&api-version=2")
    'https://h/v1?api-key=***&api-version=2'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return short(url, 80)
    if "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit((parts.scheme, MASK + "@" + host, parts.path, parts.query, parts.fragment))
    return short(url, 200)


def remember_url(url: str) -> None:
    """Remember the password and secret query values of a URL we were given."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    remember(parts.password)
    for match in _QUERY_SECRET.finditer("?" + parts.query):
        remember(match.group(0).split("=", 1)[1])


def reason(exc: BaseException, length: int = 160) -> str:
    """An exception as one scrubbed line for a message: its text, or its type's name.

    >>> reason(OSError("Invalid\\nnumber of channels"))
    'Invalid number of channels'
    >>> reason(ValueError())
    'ValueError'
    """
    return short(exc, length) or type(exc).__name__
