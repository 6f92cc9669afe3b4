"""Just enough xRSL to adapt a job description before it goes to an ARC CE.

act writes its descriptions itself; the back end only needs to

* set ``jobname`` (it carries the submission token, so that a job can be found again after a
  crash), ``queue`` and ``delegationid`` — replacing any given, never adding a second;
* find the ``inputfiles`` the client must upload (source empty or a local path), and send the CE
  an empty source for them (the CE would otherwise read a "local path" on its own disk);
* refuse a description that does not parse *before* sending it: in a bulk submission one bad
  description makes A-REX 6.17 fail the whole request with a bare HTTP 500.

Grammar handled: ``&`` followed by relations ``(name op value...)``; values are quoted strings
(``"..."`` with ``""`` for a quote, ``'...'``, or ``(^X ... X^)``), bare words, or parenthesised
lists of values. Attribute names are case-insensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|<=|>=|=|<|>)")
TOKEN_MARK = "act:"
_TOKEN_IN_NAME = re.compile(r"(?:^|\s)act:([A-Za-z0-9._-]{1,64})$")


class XrslError(ValueError):
    """The description is not xRSL act can handle."""


@dataclass(frozen=True)
class Relation:
    name: str  # lower case
    text: str  # the whole "(...)" as written


def _skip_string(text: str, pos: int) -> int:
    """``pos`` is at an opening quote; return the index after the closing one."""
    if text.startswith("(^", pos):
        end = text.find("^)", pos + 2)
        if end < 0:
            raise XrslError("unterminated (^ ... ^) string")
        return end + 2
    quote = text[pos]
    i = pos + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise XrslError(f"unterminated {quote}-quoted string")
        if text.startswith(quote * 2, end):  # a doubled quote is a literal quote
            i = end + 2
            continue
        return end + 1


def _close(text: str, pos: int) -> int:
    """``pos`` is at '('; return the index after its matching ')'."""
    depth = 0
    i = pos
    while i < len(text):
        c = text[i]
        if c in "\"'" or text.startswith("(^", i):
            i = _skip_string(text, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise XrslError("unbalanced parentheses")


def relations(description: str) -> list[Relation]:
    """The top-level relations of one ``&(...)(...)`` description."""
    text = description.strip()
    if not text.startswith("&"):
        raise XrslError("an xRSL job description starts with '&'")
    found: list[Relation] = []
    i = 1
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] != "(":
            raise XrslError(f"unexpected {text[i]!r} at offset {i}")
        end = _close(text, i)
        match = _NAME.match(text, i + 1)
        if match is None:
            raise XrslError(f"relation without an attribute name at offset {i}")
        found.append(Relation(match.group(1).lower(), text[i:end]))
        i = end
    if not found:
        raise XrslError("empty job description")
    return found


def values(relation: Relation) -> list[str | list[str]]:
    """The values of a relation: strings, and lists of strings for ``(a b)`` groups."""
    inner = relation.text[1:-1]
    match = _NAME.match(inner)
    assert match is not None
    return _values(inner, match.end(), len(inner))


def _values(text: str, i: int, end: int) -> list[str | list[str]]:
    out: list[str | list[str]] = []
    while i < end:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("(^", i):
            stop = _skip_string(text, i)
            out.append(text[i + 3 : stop - 3] if stop - i >= 6 else "")
            i = stop
        elif c == "(":
            stop = _close(text, i)
            out.append([v for v in _values(text, i + 1, stop - 1) if isinstance(v, str)])
            i = stop
        elif c in "\"'":
            stop = _skip_string(text, i)
            out.append(text[i + 1 : stop - 1].replace(c * 2, c))
            i = stop
        else:
            stop = i
            while stop < end and not text[stop].isspace() and text[stop] not in "()\"'":
                stop += 1
            out.append(text[i:stop])
            i = stop
    return out


def quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def is_url(source: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) is not None


@dataclass(frozen=True)
class Prepared:
    description: str
    uploads: tuple[tuple[str, str], ...]  # (name in the session directory, local source or "")
    name: str


def job_name(original: str | None, token: str) -> str:
    """The CE job name carrying ``token`` (kept after any name the description gave)."""
    base = (original or "").strip()
    return f"{base} {TOKEN_MARK}{token}" if base else f"{TOKEN_MARK}{token}"


def token_of(name: str | None) -> str | None:
    """The token in a job name made by :func:`job_name`, if any."""
    if not name:
        return None
    found = _TOKEN_IN_NAME.search(name.strip())
    return found.group(1) if found else None


def prepare(
    description: str,
    *,
    token: str,
    queue: str | None = None,
    delegation_id: str | None = None,
) -> Prepared:
    """The description to send: token in the job name, queue, delegation, local inputs emptied."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", token):
        raise XrslError(f"unsafe token {token!r}")
    original_name: str | None = None
    uploads: list[tuple[str, str]] = []
    kept: list[str] = []
    for relation in relations(description):
        if relation.name == "jobname":
            found = values(relation)
            original_name = found[0] if found and isinstance(found[0], str) else None
            continue
        if relation.name == "queue" and queue is not None:
            continue
        if relation.name == "delegationid" and delegation_id is not None:
            continue
        if relation.name == "inputfiles":
            entries: list[str] = []
            for entry in values(relation):
                if not isinstance(entry, list) or not entry:
                    raise XrslError("inputfiles entries are (name source [options])")
                name, source, *rest = [*entry, ""] if len(entry) == 1 else entry
                if not name or name.startswith("/") or ".." in name.split("/"):
                    raise XrslError(f"unsafe input file name {name!r}")
                if not is_url(source):
                    uploads.append((name, source))
                    source = ""
                entries.append("(" + " ".join(quote(v) for v in (name, source, *rest)) + ")")
            kept.append("(inputfiles=" + "".join(entries) + ")")
            continue
        kept.append(relation.text)
    name = job_name(original_name, token)
    kept.append(f"(jobname={quote(name)})")
    if queue is not None:
        kept.append(f"(queue={quote(queue)})")
    if delegation_id is not None:
        kept.append(f"(delegationid={quote(delegation_id)})")
    return Prepared("&" + "".join(kept), tuple(uploads), name)
