"""The output report entries a pilot gives (the ``xml`` of ``heartbeat.json``, ``metadata.xml``),
checked field by field (:class:`OutputFile`); nothing in them is trusted:

* ``lfn``: 1-255 characters from ``A-Z a-z 0-9 . _ - +``, not starting with ``.``, ``-`` or
  ``+`` (Rucio's ATLAS name rules; such a name can never be a path or an option);
* ``surl``: a string ``scheme://...`` without whitespace or control characters;
* ``fsize``: a non-negative integer (not a boolean, not a float) or a string of ASCII digits;
  absent or null is ``None``;
* ``adler32``: 1-8 hex digits, optionally prefixed ``ad:`` or ``adler32:`` (any case: both
  spellings are in use in Rucio and the pilot), normalised to 8 lowercase zero-padded digits;
  absent, null or ``""`` is ``None`` (aCT accepted a missing checksum);
* ``guid``: a UUID ``8-4-4-4-12`` hex string kept as written (case included); absent, null or
  ``""`` is ``None``.

Output list entries (:func:`check_lfn`, :func:`check_surl`) follow the same rules for the names
and URLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from act.atlas.pilot_reading import (
    BadPilotFile,
    loads_object,
    read_text,
    short_repr,
)

METADATA_XML = "metadata.xml"

_LFN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_ADLER32 = re.compile(r"(?:ad:|adler32:)?([0-9a-f]{1,8})", re.IGNORECASE)
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


@dataclass(frozen=True)
class OutputFile:
    """One output file as the pilot reported it (checked; see the module docstring)."""

    lfn: str
    surl: str
    fsize: int | None
    adler32: str | None
    guid: str | None


def _fsize(value: Any, name: str, lfn: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise BadPilotFile(name, f"{lfn}: fsize {short_repr(value)} is not a non-negative integer")


def _adler32(value: Any, name: str, lfn: str) -> str | None:
    if value is None or value == "":
        return None
    match = _ADLER32.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BadPilotFile(name, f"{lfn}: adler32 {short_repr(value)} is not 1-8 hex digits")
    return match.group(1).lower().zfill(8)


def _guid(value: Any, name: str, lfn: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and _GUID.fullmatch(value):
        return value
    raise BadPilotFile(name, f"{lfn}: guid {short_repr(value)} is not a UUID")


def check_lfn(value: Any, name: str) -> str:
    """``value`` if it is a safe lfn (see the module docstring); BadPilotFile naming ``name``."""
    if isinstance(value, str) and _LFN.fullmatch(value):
        return value
    raise BadPilotFile(name, f"unsafe or empty lfn {short_repr(value)}")


def check_surl(value: Any, name: str, lfn: str) -> str:
    """``value`` if it is a URL with a scheme; BadPilotFile naming ``name`` and ``lfn``."""
    if isinstance(value, str) and _SCHEME.fullmatch(value) and len(value) <= 4096:
        return value
    raise BadPilotFile(name, f"{lfn}: surl {short_repr(value)} is not a URL with a scheme")


def output_report(report: Any, name: str) -> tuple[OutputFile, ...]:
    """The output report (heartbeat ``xml``): ``{lfn: {surl, fsize, adler32, guid, ...}}`` as a
    JSON string or an object; absent, null, ``""`` or ``{}`` mean no outputs."""
    if report is None or report == "":
        return ()
    if isinstance(report, str):
        report = loads_object(report, name, "xml")
    if not isinstance(report, dict):
        raise BadPilotFile(name, f"xml: a {type(report).__name__}, not an object or JSON string")
    outputs: list[OutputFile] = []
    for key, entry in report.items():
        lfn = check_lfn(key, name)
        if not isinstance(entry, dict):
            raise BadPilotFile(name, f"{lfn}: a {type(entry).__name__}, not an object")
        outputs.append(
            OutputFile(
                lfn=lfn,
                surl=check_surl(entry.get("surl"), name, lfn),
                fsize=_fsize(entry.get("fsize"), name, lfn),
                adler32=_adler32(entry.get("adler32"), name, lfn),
                guid=_guid(entry.get("guid"), name, lfn),
            )
        )
    return tuple(outputs)


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )


def read_metadata_xml(directory: Path, *, max_bytes: int = 16 << 20) -> list[OutputFile] | None:
    """``directory/metadata.xml``, a POOL file catalog, as output files; None if absent.

    ``<POOLFILECATALOG><File ID="guid"><physical><pfn name="..."/></physical><logical><lfn
    name="..."/></logical><metadata att_name="fsize" att_value="..."/>...</File>``. ``surl`` is the
    ``pfn`` name when it is a URL, else ``''`` (older transforms write a local file name there).

    Refused: anything not UTF-8 (so no UTF-16 trick hides a declaration), any entity declaration
    (``<!ENTITY``: billion laughs, external entities), malformed XML, a root other than
    POOLFILECATALOG, a File without one valid lfn, the same lfn twice. The parser never reads a DTD
    or the network and never expands entities, as a second line of defence.
    """
    name = METADATA_XML
    text = read_text(directory, name, max_bytes)
    if text is None:
        return None
    if "\x00" in text:
        raise BadPilotFile(name, "contains NUL characters")
    if "<!ENTITY" in text:
        raise BadPilotFile(name, "entity declarations are refused")
    try:
        root = etree.fromstring(text.encode("utf-8"), _xml_parser())
    except etree.XMLSyntaxError as exc:
        raise BadPilotFile(name, f"malformed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):  # type: ignore[union-attr]
        raise BadPilotFile(name, "entity declarations are refused")
    if root.tag != "POOLFILECATALOG":
        raise BadPilotFile(name, f"root element {short_repr(root.tag)} is not POOLFILECATALOG")
    files: list[OutputFile] = []
    seen: set[str] = set()
    for element in root.iterchildren("File"):
        files.append(_catalog_file(element, name))
        if files[-1].lfn in seen:
            raise BadPilotFile(name, f"lfn {files[-1].lfn} listed twice")
        seen.add(files[-1].lfn)
    return files


def _catalog_file(element: Any, name: str) -> OutputFile:
    lfns = element.findall("logical/lfn")
    if len(lfns) != 1:
        raise BadPilotFile(name, f"a File with {len(lfns)} logical names instead of 1")
    lfn = check_lfn(lfns[0].get("name"), name)
    meta: dict[str, str | None] = {}
    for item in element.iterchildren("metadata"):
        key = item.get("att_name")
        if key in meta:
            raise BadPilotFile(name, f"{lfn}: metadata {short_repr(key)} twice")
        meta[key] = item.get("att_value")
    pfns = element.findall("physical/pfn")
    pfn = pfns[0].get("name") if len(pfns) == 1 else None
    surl = pfn if isinstance(pfn, str) and _SCHEME.fullmatch(pfn) else ""
    return OutputFile(
        lfn=lfn,
        surl=surl,
        fsize=_fsize(meta.get("fsize"), name, lfn),
        adler32=_adler32(meta.get("adler32"), name, lfn),
        guid=_guid(element.get("ID"), name, lfn),
    )
