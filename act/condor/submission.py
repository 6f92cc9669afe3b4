"""Submit descriptions for the schedd: one job's checked and completed, a batch's combined.

:func:`prepare` parses a job's description with the real ``htcondor2.Submit`` and adds what the
back end owns: the request's token (``+ActToken``), the CE's name (``+ActCE``), the job's own
``initialdir`` (where the schedd brings transferred outputs back), and the credential
(``x509userproxy`` and/or ``scitokens_file``) when the description names none. Paths the
description gives (``output``, ``error``, ``log`` in the web area) are never rewritten.

:func:`combine` turns a batch into as few ``Schedd.submit`` calls as possible, each one schedd
transaction (one cluster): keys equal in every description are written once, keys that differ
become ``key = $(ActItemN)`` with the values as ``itemdata``. A description that cannot be
combined safely (a ``$`` that would be re-expanded, the item separator) is submitted alone.
HTCondor *merges* ``environment`` from one proc of a cluster into the next (a variable of proc 0
that proc 1 does not set is inherited: seen with htcondor 24's ``Submit.jobs``), so only jobs
setting the same environment variable names share a cluster (each proc then overrides them all);
an environment that cannot be parsed shares a cluster only with the very same value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Request tokens the back end puts into ClassAd constraints and directory names: nothing to
#: quote, never "." or "..".
TOKEN = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,64}")
#: Keys the back end sets itself (lower case: submit keys are case-insensitive).
OWNED = ("initialdir", "iwd", "my.acttoken", "my.actce")
ITEM = "ActItem"
_UNSAFE_ITEM = ("$", "\x1f", "\n", "\r")


class DescriptionError(ValueError):
    """A description the back end refuses (another CE would refuse it too)."""


@dataclass(frozen=True)
class Batch:
    """One ``Schedd.submit`` call: its description text and, for several jobs, the itemdata."""

    indices: tuple[int, ...]  # positions in the prepared list, in proc order
    text: str  # ``key = value`` lines, no queue statement
    items: tuple[dict[str, str], ...] = ()  # empty: one job


def classad_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def grid_resource_for(url: str) -> str:
    """``grid_resource`` for a CE url: ``arc <https url>`` or ``condor host host:port``."""
    if url.startswith("https://"):
        return f"arc {url}"
    hostport = url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.partition(":")
    return f"condor {host} {host}:{port or '9619'}"


def prepare(
    description: str,
    *,
    token: str,
    ce_name: str,
    iwd: str,
    default_grid_resource: str | None,
    proxy: str | None,
    token_file: str | None,
) -> dict[str, str]:
    """The job's submit keys (raw values, as ``Submit.items()`` gives them) ready to submit."""
    import htcondor2

    if not TOKEN.fullmatch(token):
        raise DescriptionError(f"request token {token!r} is not [A-Za-z0-9._-]{{1,64}}")
    try:
        submit = htcondor2.Submit(description)
        keys = {key: str(value) for key, value in submit.items()}
        qargs = submit.getQArgs().strip()
    except Exception as error:  # the bindings raise several kinds for a bad text
        raise DescriptionError(f"not a valid submit description: {error}") from None
    if qargs not in ("", "1") or _after_queue(description):
        raise DescriptionError(f"one job per description: queue {qargs!r} ... is not")
    lower = {key.lower(): key for key in keys}
    for owned in OWNED:
        if owned in lower:
            raise DescriptionError(f"{lower[owned]} is set by the HTCondor back end")
    universe = keys.get(lower.get("universe", ""), "").strip().lower()
    if universe != "grid":
        raise DescriptionError(f"universe {universe or '(none)'!r}: only grid is submitted")
    if "grid_resource" not in lower:
        if not default_grid_resource:
            raise DescriptionError("no grid_resource, and the CE has no url to make one")
        keys["grid_resource"] = default_grid_resource
    if proxy and "x509userproxy" not in lower:
        keys["x509userproxy"] = proxy
    if token_file and "scitokens_file" not in lower:
        keys["scitokens_file"] = token_file
    keys["initialdir"] = iwd
    keys["MY.ActToken"] = classad_string(token)
    keys["MY.ActCE"] = classad_string(ce_name)
    for key, value in keys.items():
        if "\n" in value or "\r" in value:
            raise DescriptionError(f"{key}: a value holds a line break")
    return keys


_QUEUE = re.compile(r"(?i)\s*queue\b")


def _after_queue(description: str) -> bool:
    """Whether anything but blanks and comments follows the first queue statement (the
    bindings ignore it silently: a second queue statement would be lost)."""
    lines = description.splitlines()
    for n, line in enumerate(lines):
        if _QUEUE.match(line):
            rest = [x.strip() for x in lines[n + 1 :]]
            return any(x and not x.startswith("#") for x in rest)
    return False


def _combinable(keys: dict[str, str]) -> bool:
    return not any(c in value for value in keys.values() for c in _UNSAFE_ITEM)


def env_names(value: str) -> tuple[str, ...] | None:
    """The variable names of a new-syntax ``environment`` value (``"A=1 B='x y'"``), or None
    when it is not one (old syntax, unbalanced quotes)."""
    text = value.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    inner, words, word, quoted, i = text[1:-1], [], "", False, 0
    while i < len(inner):
        c = inner[i]
        if c == "'" and quoted and inner[i + 1 : i + 2] == "'":
            word, i = word + "'", i + 2
            continue
        if c == "'":
            quoted = not quoted
        elif c in " \t" and not quoted:
            if word:
                words.append(word)
            word = ""
        else:
            word += c
        i += 1
    if quoted:
        return None
    if word:
        words.append(word)
    return tuple(sorted({w.split("=", 1)[0] for w in words}))


def _cluster_key(keys: dict[str, str]) -> tuple[object, ...]:
    """Jobs with the same cluster key may share one cluster (see the module docstring)."""
    environment = next((v for k, v in keys.items() if k.lower() == "environment"), None)
    names = env_names(environment) if environment is not None else ()
    return (tuple(keys), names if names is not None else ("=", environment))


def combine(prepared: Sequence[dict[str, str]]) -> list[Batch]:
    """The submit calls for ``prepared`` (the key sets of one CE's batch)."""
    groups: dict[tuple[object, ...], list[int]] = {}
    alone: list[int] = []
    for index, keys in enumerate(prepared):
        if _combinable(keys):
            groups.setdefault(_cluster_key(keys), []).append(index)
        else:
            alone.append(index)
    batches: list[Batch] = []
    for indices in groups.values():
        order = list(prepared[indices[0]])
        if len(indices) == 1:
            alone.append(indices[0])
            continue
        lines: list[str] = []
        varying: list[tuple[str, str]] = []
        for key in order:
            values = {prepared[i][key] for i in indices}
            if len(values) == 1:
                lines.append(f"{key} = {values.pop()}")
            else:
                item = f"{ITEM}{len(varying)}"
                varying.append((key, item))
                lines.append(f"{key} = $({item})")
        items = tuple({item: prepared[i][key] for key, item in varying} for i in indices)
        batches.append(Batch(tuple(indices), "\n".join(lines) + "\n", items))
    for index in sorted(alone):
        text = "".join(f"{key} = {value}\n" for key, value in prepared[index].items())
        batches.append(Batch((index,), text))
    return batches
