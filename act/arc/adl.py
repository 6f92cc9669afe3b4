"""Just enough EMI-ES ADL (``<ActivityDescription>``) to adapt a description for an ARC CE.

The ADL counterpart of :mod:`act.arc.xrsl`: set ``ActivityIdentification/Name`` (carrying the
token), ``Resources/QueueName`` and, on every ``DataStaging`` source and target, the
``DelegationID``; list the input files the client must upload (an ``InputFile`` without a
``Source``, or whose source URI is a local path, which is then dropped so the CE waits for it).
Descriptions are act's own; the parser refuses DTDs and entities all the same.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from act.arc.xrsl import Prepared, XrslError, is_url, job_name

ADL = "http://www.eu-emi.eu/es/2010/12/adl"
_Q = "{" + ADL + "}"


class AdlError(XrslError):
    """The ADL description cannot be used."""


def _child(parent: ET.Element, name: str, *, create: bool, first: bool = False) -> ET.Element:
    found = parent.find(_Q + name)
    if found is None:
        if not create:
            raise AdlError(f"no {name} element")
        found = ET.Element(_Q + name)
        if first:
            parent.insert(0, found)
        else:
            parent.append(found)
    return found


def prepare(
    description: str,
    *,
    token: str,
    queue: str | None = None,
    delegation_id: str | None = None,
) -> Prepared:
    text = description.strip()
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise AdlError("DTDs and entities are not accepted in ADL descriptions")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise AdlError(f"not well-formed XML: {error}") from None
    if root.tag != _Q + "ActivityDescription":
        raise AdlError(f"the root element must be ADL's ActivityDescription, not {root.tag}")
    ident = _child(root, "ActivityIdentification", create=True, first=True)
    name_el = _child(ident, "Name", create=True, first=True)
    name = job_name(name_el.text, token)
    name_el.text = name
    if queue is not None:
        resources = _child(root, "Resources", create=True)
        _child(resources, "QueueName", create=True).text = queue
    uploads: list[tuple[str, str]] = []
    staging = root.find(_Q + "DataStaging")
    if staging is not None:
        for item in staging.findall(_Q + "InputFile"):
            file_name = (item.findtext(_Q + "Name") or "").strip()
            if not file_name or file_name.startswith("/") or ".." in file_name.split("/"):
                raise AdlError(f"unsafe input file name {file_name!r}")
            sources = item.findall(_Q + "Source")
            local = [s for s in sources if not is_url((s.findtext(_Q + "URI") or "").strip())]
            if not sources or local:
                uploads.append(
                    (file_name, (local[0].findtext(_Q + "URI") or "").strip() if local else "")
                )
                for source in local:
                    item.remove(source)
        if delegation_id is not None:
            for place in [*staging.iter(_Q + "Source"), *staging.iter(_Q + "Target")]:
                for old in place.findall(_Q + "DelegationID"):
                    place.remove(old)
                ET.SubElement(place, _Q + "DelegationID").text = delegation_id
    ET.register_namespace("", ADL)
    body = ET.tostring(root, encoding="unicode")
    return Prepared(body, tuple(uploads), name)
