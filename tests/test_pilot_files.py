"""act.atlas.pilot_files: reading heartbeat.json, jobReport.json, metadata.xml and logs that came
from a worker node, none of them trusted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from act.atlas.pilot_files import (
    HEARTBEAT,
    JOB_REPORT,
    METADATA_XML,
    OUTPUT_LIST,
    BadPilotFile,
    Heartbeat,
    ListedOutput,
    OutputFile,
    find_job_report,
    log_excerpt,
    read_heartbeat,
    read_job_report,
    read_metadata_xml,
    read_output_list,
    read_text_tail,
)

DATA = Path(__file__).parent / "data" / "pilot"
SURL = "davs://dav.example.org:443/atlas/disk/f1"
GUID = "6A2E1B4C-8F3D-4E5A-9B7C-1D2E3F4A5B6C"


def _heartbeat(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / HEARTBEAT
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _with_xml(tmp_path: Path, xml: Any) -> Heartbeat | None:
    _heartbeat(tmp_path, json.dumps({"jobId": 1, "state": "finished", "xml": xml}))
    return read_heartbeat(tmp_path)


def _entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"surl": SURL, "fsize": 10, "adler32": "0a1b2c3d", "guid": GUID}
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not ...}


def _bad(tmp_path: Path, *, reason: str) -> BadPilotFile:
    with pytest.raises(BadPilotFile) as caught:
        read_heartbeat(tmp_path)
    assert caught.value.name == HEARTBEAT
    assert reason in caught.value.reason
    assert str(caught.value) == f"{HEARTBEAT}: {caught.value.reason}"
    assert "\n" not in str(caught.value)
    return caught.value


# --- heartbeat.json -------------------------------------------------------------------------


def test_the_realistic_heartbeat_is_read_whole(tmp_path: Path) -> None:
    shutil.copy(DATA / HEARTBEAT, tmp_path / HEARTBEAT)
    heartbeat = read_heartbeat(tmp_path)
    assert heartbeat is not None
    assert heartbeat.state == "finished"
    assert heartbeat.fields == json.loads((DATA / HEARTBEAT).read_text())
    assert heartbeat.fields["cpuConsumptionUnit"].startswith("s+AMD")
    assert heartbeat.outputs == (
        OutputFile(
            lfn="EVNT.41234567._000123.pool.root.1",
            surl="davs://dav.ndgf.org:443/atlas/disk/atlasdatadisk/rucio/mc23_13p6TeV/3f/2a/"
            "EVNT.41234567._000123.pool.root.1",
            fsize=182734512,
            adler32="0a1b2c3d",
            guid="6A2E1B4C-8F3D-4E5A-9B7C-1D2E3F4A5B6C",
        ),
        OutputFile(
            lfn="log.41234567._000123.job.log.tgz.1",
            surl="davs://dav.ndgf.org:443/atlas/disk/atlasdatadisk/rucio/mc23_13p6TeV/9c/71/"
            "log.41234567._000123.job.log.tgz.1",
            fsize=2311095,
            adler32="1f2e3d4c",
            guid="0f9e8d7c-6b5a-4938-2716-05f4e3d2c1b0",
        ),
    )


def test_an_absent_heartbeat_is_none(tmp_path: Path) -> None:
    assert read_heartbeat(tmp_path) is None
    assert read_heartbeat(tmp_path / "no-such-directory") is None


def test_xml_as_a_json_string_and_as_an_object_give_the_same_outputs(tmp_path: Path) -> None:
    report = {"AOD.1._000001.pool.root.1": _entry()}
    as_string = _with_xml(tmp_path, json.dumps(report))
    as_object = _with_xml(tmp_path, report)
    assert as_string is not None and as_object is not None
    assert as_string.outputs == as_object.outputs
    assert as_string.outputs == (
        OutputFile("AOD.1._000001.pool.root.1", SURL, 10, "0a1b2c3d", GUID),
    )
    assert as_string.fields["xml"] == json.dumps(report)  # kept as read


@pytest.mark.parametrize("xml", [None, "", {}, "{}"])
def test_an_empty_or_absent_output_report_means_no_outputs(tmp_path: Path, xml: Any) -> None:
    heartbeat = _with_xml(tmp_path, xml)
    assert heartbeat is not None
    assert heartbeat.outputs == ()
    _heartbeat(tmp_path, '{"state": "failed"}')
    assert read_heartbeat(tmp_path) == Heartbeat({"state": "failed"}, "failed", ())


def test_unknown_fields_and_a_non_string_state_are_kept(tmp_path: Path) -> None:
    fields = {"state": 3, "somethingNew": {"nested": [1, 2.5, None, True]}, "jobId": "12"}
    _heartbeat(tmp_path, json.dumps(fields))
    heartbeat = read_heartbeat(tmp_path)
    assert heartbeat == Heartbeat(fields, None, ())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0A1B2C3D", "0a1b2c3d"),
        ("abc", "00000abc"),
        ("ad:1f2e3d4c", "1f2e3d4c"),
        ("adler32:00FF00ff", "00ff00ff"),
        ("AD:1", "00000001"),
        ("", None),
        (None, None),
        (..., None),
    ],
)
def test_adler32_is_normalised(tmp_path: Path, given: Any, expected: str | None) -> None:
    heartbeat = _with_xml(tmp_path, {"f.1": _entry(adler32=given)})
    assert heartbeat is not None
    assert heartbeat.outputs[0].adler32 == expected


@pytest.mark.parametrize("value", [123456, "0a1b2c3d4", "xyz", "md5:0a1b2c3d", " 0a1b2c3d", True])
def test_bad_adler32_is_refused(tmp_path: Path, value: Any) -> None:
    _heartbeat(tmp_path, json.dumps({"xml": {"f.1": _entry(adler32=value)}}))
    _bad(tmp_path, reason="f.1: adler32")


@pytest.mark.parametrize(
    ("given", "expected"), [(0, 0), (5, 5), ("123", 123), (None, None), (..., None)]
)
def test_fsize_as_integer_or_digit_string(tmp_path: Path, given: Any, expected: int | None) -> None:
    heartbeat = _with_xml(tmp_path, {"f.1": _entry(fsize=given)})
    assert heartbeat is not None
    assert heartbeat.outputs[0].fsize == expected


@pytest.mark.parametrize("value", [-1, 1.5, 10.0, True, "-1", "1e3", "12 ", "", "\u0661", [1], {}])
def test_bad_fsize_is_refused(tmp_path: Path, value: Any) -> None:
    _heartbeat(tmp_path, json.dumps({"xml": {"f.1": _entry(fsize=value)}}))
    _bad(tmp_path, reason="f.1: fsize")


@pytest.mark.parametrize(
    "surl", ["/local/path/f.1", "f.1", "davs:/x", "", 42, None, "root://host/a b", ...]
)
def test_a_surl_must_be_a_url_with_a_scheme(tmp_path: Path, surl: Any) -> None:
    _heartbeat(tmp_path, json.dumps({"xml": {"f.1": _entry(surl=surl)}}))
    _bad(tmp_path, reason="f.1: surl")


@pytest.mark.parametrize("guid", ["not-a-guid", 12, GUID + "0"])
def test_a_guid_must_be_a_uuid(tmp_path: Path, guid: Any) -> None:
    _heartbeat(tmp_path, json.dumps({"xml": {"f.1": _entry(guid=guid)}}))
    _bad(tmp_path, reason="f.1: guid")


@pytest.mark.parametrize(
    "lfn", ["", "../etc/passwd", "a/b", ".hidden", "-rf", "a b", "a\nb", "x" * 256, "é.root"]
)
def test_unsafe_lfns_are_refused(tmp_path: Path, lfn: str) -> None:
    _heartbeat(tmp_path, json.dumps({"xml": {lfn: _entry()}}))
    _bad(tmp_path, reason="unsafe or empty lfn")


@pytest.mark.parametrize("xml", [[], 5, "[1]", "not json", '{"f.1": 3}'])
def test_an_output_report_of_the_wrong_shape_is_refused(tmp_path: Path, xml: Any) -> None:
    _heartbeat(tmp_path, json.dumps({"xml": xml}))
    _bad(tmp_path, reason="")


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    _heartbeat(tmp_path, '{"state": "finished",')
    _bad(tmp_path, reason="not valid JSON")


def test_a_json_array_is_refused(tmp_path: Path) -> None:
    _heartbeat(tmp_path, '[{"state": "finished"}]')
    _bad(tmp_path, reason="a JSON list, not an object")


def test_duplicate_keys_are_refused_at_the_top_and_inside_xml(tmp_path: Path) -> None:
    _heartbeat(tmp_path, '{"state": "finished", "state": "failed"}')
    _bad(tmp_path, reason="duplicate key 'state'")
    inner = '{"f.1": {"surl": "' + SURL + '", "fsize": 1, "fsize": 2}}'
    _heartbeat(tmp_path, json.dumps({"xml": inner}))
    _bad(tmp_path, reason="duplicate key 'fsize'")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(tmp_path: Path, constant: str) -> None:
    _heartbeat(tmp_path, '{"cpuConsumptionTime": ' + constant + "}")
    _bad(tmp_path, reason=f"{constant} is not JSON")


def test_not_utf8_is_refused_but_a_bom_is_tolerated(tmp_path: Path) -> None:
    _heartbeat(tmp_path, b'{"node": "\xff\xfe"}')
    _bad(tmp_path, reason="not UTF-8")
    _heartbeat(tmp_path, b'\xef\xbb\xbf{"state": "running"}')
    heartbeat = read_heartbeat(tmp_path)
    assert heartbeat is not None and heartbeat.state == "running"


def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    _heartbeat(tmp_path, json.dumps({"pilotLog": "x" * 5000}))
    _bad_cap = pytest.raises(BadPilotFile, match="larger than 4096 bytes")
    with _bad_cap:
        read_heartbeat(tmp_path, max_bytes=4096)
    assert read_heartbeat(tmp_path, max_bytes=8192) is not None


def test_deep_nesting_and_huge_integers_are_refused_not_crashing(tmp_path: Path) -> None:
    _heartbeat(tmp_path, '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _bad(tmp_path, reason="")
    _heartbeat(tmp_path, '{"a": ' + "9" * 5000 + "}")
    _bad(tmp_path, reason="not valid JSON")


def test_a_symlinked_heartbeat_is_refused_and_not_read(tmp_path: Path) -> None:
    (tmp_path / HEARTBEAT).symlink_to("/etc/passwd")
    error = _bad(tmp_path, reason="symbolic link")
    assert "root" not in str(error)


def test_a_symlink_to_a_valid_heartbeat_is_refused_too(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.json"
    real.write_text('{"state": "finished"}')
    (tmp_path / HEARTBEAT).symlink_to(real)
    _bad(tmp_path, reason="symbolic link")


def test_a_directory_or_fifo_named_heartbeat_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / HEARTBEAT).mkdir()
    _bad(tmp_path, reason="not a regular file")
    (tmp_path / HEARTBEAT).rmdir()
    os.mkfifo(tmp_path / HEARTBEAT)
    _bad(tmp_path, reason="not a regular file")


# --- jobReport.json --------------------------------------------------------------------------


def test_the_job_report_is_returned_as_read(tmp_path: Path) -> None:
    report = {
        "exitCode": 0,
        "exitMsg": "OK",
        "files": {"output": [{"subFiles": [{"name": "AOD.pool.root", "file_size": 12}]}]},
    }
    (tmp_path / JOB_REPORT).write_text(json.dumps(report))
    assert read_job_report(tmp_path) == report
    assert read_job_report(tmp_path / "missing") is None


def test_a_bad_job_report_names_its_file(tmp_path: Path) -> None:
    (tmp_path / JOB_REPORT).write_text('"just a string"')
    with pytest.raises(BadPilotFile, match=r"^jobReport\.json: content: a JSON str, not an object"):
        read_job_report(tmp_path)
    (tmp_path / JOB_REPORT).write_text("{}" + " " * 100)
    with pytest.raises(BadPilotFile, match="larger than 64 bytes"):
        read_job_report(tmp_path, max_bytes=64)


def test_pilot3s_job_report_is_found_in_its_job_directory_before_the_top(tmp_path: Path) -> None:
    (tmp_path / JOB_REPORT).write_text('{"exitCode": 1}')  # an older pilot's place
    assert find_job_report(tmp_path, panda_id=42) == find_job_report(tmp_path, panda_id=None)
    (tmp_path / "PanDA_Pilot-42").mkdir()
    text = '{"exitCode": 0,  "exitMsg": "OK"}'
    (tmp_path / "PanDA_Pilot-42" / JOB_REPORT).write_text(text)
    found = find_job_report(tmp_path, panda_id=42)
    assert found is not None
    assert (found.name, found.text) == ("PanDA_Pilot-42/jobReport.json", text)  # as written
    assert read_job_report(tmp_path, panda_id=42) == {"exitCode": 0, "exitMsg": "OK"}
    (tmp_path / "PanDA_Pilot-42" / JOB_REPORT).write_text("[]")
    with pytest.raises(BadPilotFile, match=r"^PanDA_Pilot-42/jobReport\.json: content"):
        find_job_report(tmp_path, panda_id=42)
    shutil.rmtree(tmp_path / "PanDA_Pilot-42")
    (tmp_path / "PanDA_Pilot-42").symlink_to("/etc")
    with pytest.raises(BadPilotFile, match=r"PanDA_Pilot-42/jobReport\.json"):
        find_job_report(tmp_path, panda_id=42)


# --- output.list -----------------------------------------------------------------------------


def test_output_list_as_pilot3_writes_it(tmp_path: Path) -> None:
    # pilot/copytool/mv.py create_output_list: "<lfn> <turl>:checksumtype=...:checksumvalue=..."
    (tmp_path / OUTPUT_LIST).write_text(
        "EVNT.01.pool.root root://se.example.org:1094//atlas/EVNT.01.pool.root"
        ":checksumtype=adler32:checksumvalue=8FB4B512\n"
        "\n"
        "1.log.tgz davs://dav.example.org:443/atlas/1.log.tgz:checksumtype=adler32"
        ":checksumvalue=62d7ff4\n"
        "AOD.pool.root rucio://rucio-lb-prod.cern.ch;failureallowed=yes/objectstores/"
        "s3+rucio://os.example.org/bucket/AOD.pool.root/OS_ES/write\n"
    )
    assert read_output_list(tmp_path) == (
        ListedOutput(
            "EVNT.01.pool.root",
            "root://se.example.org:1094//atlas/EVNT.01.pool.root",
            "adler32",
            "8fb4b512",
        ),
        ListedOutput(
            "1.log.tgz", "davs://dav.example.org:443/atlas/1.log.tgz", "adler32", "062d7ff4"
        ),
        ListedOutput(
            "AOD.pool.root",
            "rucio://rucio-lb-prod.cern.ch;failureallowed=yes/objectstores/"
            "s3+rucio://os.example.org/bucket/AOD.pool.root/OS_ES/write",
            None,
            None,
        ),
    )
    assert read_output_list(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("a.root\n", ["line 1", "is not '<lfn> <url>'"]),
        ("a.root root://h//a b\n", ["line 1"]),
        ("../etc root://h//x\n", ["line 1", "unsafe"]),
        ("a.root /local/path\n", ["line 1", "not a URL"]),
        ("a.root root://h//a\na.root root://h//b\n", ["line 2", "listed twice"]),
        ("a.root root://h//a:checksumtype=adler32:checksumvalue=xyz\n", ["line 1", "hex"]),
        ("a.root root://h//a:checksumvalue=0a0b0c0d\n", ["line 1", "type"]),
        ("a.root root://h//a:checksumtype=adler32:checksumvalue=123456789\n", ["8 hex"]),
    ],
)
def test_a_bad_output_list_names_the_line_and_cause(
    tmp_path: Path, content: str, words: list[str]
) -> None:
    (tmp_path / OUTPUT_LIST).write_text(content)
    with pytest.raises(BadPilotFile) as error:
        read_output_list(tmp_path)
    assert str(error.value).startswith("output.list line")
    for word in words:
        assert word in str(error.value)


# --- metadata.xml ----------------------------------------------------------------------------


def _metadata(tmp_path: Path, text: str) -> None:
    (tmp_path / METADATA_XML).write_text(text)


def _bad_xml(tmp_path: Path, reason: str) -> str:
    with pytest.raises(BadPilotFile) as caught:
        read_metadata_xml(tmp_path)
    assert caught.value.name == METADATA_XML
    assert reason in caught.value.reason
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_pool_file_catalog_is_read(tmp_path: Path) -> None:
    shutil.copy(DATA / METADATA_XML, tmp_path / METADATA_XML)
    assert read_metadata_xml(tmp_path) == [
        OutputFile(
            lfn="EVNT.41234567._000123.pool.root.1",
            surl="",
            fsize=182734512,
            adler32="0a1b2c3d",
            guid="6A2E1B4C-8F3D-4E5A-9B7C-1D2E3F4A5B6C",
        )
    ]
    assert read_metadata_xml(tmp_path / "missing") is None


def test_a_pfn_url_becomes_the_surl(tmp_path: Path) -> None:
    _metadata(
        tmp_path,
        f'<POOLFILECATALOG><File ID="{GUID}"><physical><pfn name="{SURL}"/></physical>'
        '<logical><lfn name="f.1"/></logical></File>'
        '<File ID=""><logical><lfn name="f.2"/></logical></File></POOLFILECATALOG>',
    )
    assert read_metadata_xml(tmp_path) == [
        OutputFile("f.1", SURL, None, None, GUID),
        OutputFile("f.2", "", None, None, None),
    ]


def test_xxe_is_refused_and_the_file_is_not_read(tmp_path: Path) -> None:
    _metadata(
        tmp_path,
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        f'<POOLFILECATALOG><File ID="{GUID}"><logical><lfn name="&x;"/></logical></File>'
        "</POOLFILECATALOG>",
    )
    message = _bad_xml(tmp_path, "entity declarations are refused")
    assert "root:" not in message


def test_the_parser_itself_neither_expands_nor_fetches_entities() -> None:
    """The second line of defence, should a declaration get past the text check."""
    from lxml import etree

    from act.atlas.pilot_outputs import _xml_parser

    text = (
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd"><!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&x;&b;</r>'
    )
    root = etree.fromstring(text, _xml_parser())
    assert "root:" not in etree.tostring(root, method="text", encoding="unicode")
    assert "aaaaaaaaaa" not in etree.tostring(root, encoding="unicode").split("]>")[-1]


def test_parameter_entities_are_refused(tmp_path: Path) -> None:
    _metadata(
        tmp_path,
        '<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><POOLFILECATALOG/>',
    )
    _bad_xml(tmp_path, "entity declarations are refused")


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    _metadata(
        tmp_path,
        f"<!DOCTYPE POOLFILECATALOG [{entities}]><POOLFILECATALOG>&lol9;</POOLFILECATALOG>",
    )
    _bad_xml(tmp_path, "entity declarations are refused")


def test_utf16_cannot_hide_an_entity_declaration(tmp_path: Path) -> None:
    text = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'
    (tmp_path / METADATA_XML).write_bytes(text.encode("utf-16-le"))
    _bad_xml(tmp_path, "")


def test_an_entity_reference_without_declaration_is_malformed(tmp_path: Path) -> None:
    _metadata(tmp_path, "<POOLFILECATALOG>&undeclared;</POOLFILECATALOG>")
    _bad_xml(tmp_path, "malformed XML")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<POOLFILECATALOG><File>", "malformed XML"),
        ("", "malformed XML"),
        ("<other/>", "is not POOLFILECATALOG"),
        ('<POOLFILECATALOG><File ID="x"><logical/></File></POOLFILECATALOG>', "0 logical names"),
        (
            '<POOLFILECATALOG><File><logical><lfn name="../x"/></logical></File></POOLFILECATALOG>',
            "unsafe or empty lfn",
        ),
        (
            '<POOLFILECATALOG><File><logical><lfn name="a"/></logical></File>'
            '<File><logical><lfn name="a"/></logical></File></POOLFILECATALOG>',
            "listed twice",
        ),
        (
            '<POOLFILECATALOG><File><logical><lfn name="a"/></logical>'
            '<metadata att_name="fsize" att_value="big"/></File></POOLFILECATALOG>',
            "a: fsize",
        ),
    ],
)
def test_malformed_catalogs_are_refused(tmp_path: Path, text: str, reason: str) -> None:
    _metadata(tmp_path, text)
    _bad_xml(tmp_path, reason)


def test_a_symlinked_metadata_xml_is_refused(tmp_path: Path) -> None:
    (tmp_path / METADATA_XML).symlink_to(DATA / METADATA_XML)
    _bad_xml(tmp_path, "symbolic link")


# --- logs ------------------------------------------------------------------------------------


def test_read_text_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "pilotlog.txt"
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(100)) + b"bad \xff\x00 end")
    assert read_text_tail(log, max_lines=3) == "line 98\nline 99\nbad \ufffd\ufffd end"
    assert read_text_tail(tmp_path / "absent.txt", max_lines=3) is None


def test_read_text_tail_reads_only_the_window_and_drops_the_cut_line(tmp_path: Path) -> None:
    log = tmp_path / "big.txt"
    log.write_text("".join(f"{i:09d}\n" for i in range(100_000)))  # 10 bytes a line
    assert read_text_tail(log, max_lines=1000, max_bytes=25) == "000099998\n000099999"


def test_read_text_tail_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "log").symlink_to("/etc/passwd")
    with pytest.raises(BadPilotFile, match=r"^log: a symbolic link"):
        read_text_tail(tmp_path / "log", max_lines=5)


def test_log_excerpt_puts_error_lines_first_then_the_last_lines(tmp_path: Path) -> None:
    lines = [f"info {i}" for i in range(50)]
    lines[10] = "2026-11-22 ERROR stage-in failed for EVNT.1"
    lines[20] = "Traceback (most recent call last):"
    lines[48] = "ERROR in the tail, shown once"
    (tmp_path / "gmlog").mkdir()
    (tmp_path / "gmlog" / "errors").write_text("\n".join(lines) + "\n")
    excerpt = log_excerpt(tmp_path, ["missing.log", "gmlog/errors"], max_lines=6)
    assert excerpt.split("\n") == [
        "== gmlog/errors: lines that look like errors ==",
        "2026-11-22 ERROR stage-in failed for EVNT.1",
        "Traceback (most recent call last):",
        "== gmlog/errors: last 4 lines ==",
        "info 46",
        "info 47",
        "ERROR in the tail, shown once",
        "info 49",
    ]


def test_log_excerpt_fills_with_last_lines_when_there_are_no_errors(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a\nb\nc\n" + "x" * 600 + "\n")
    excerpt = log_excerpt(tmp_path, ["out"], max_lines=10)
    assert excerpt.split("\n") == ["== out: last 4 lines ==", "a", "b", "c", "x" * 497 + "..."]


def test_log_excerpt_skips_links_and_non_files(tmp_path: Path) -> None:
    (tmp_path / "gmlog").symlink_to("/etc")  # gmlog/passwd would be /etc/passwd
    (tmp_path / "pilot.out").symlink_to("/etc/passwd")
    (tmp_path / "dir.log").mkdir()
    names = ["gmlog/passwd", "pilot.out", "dir.log", "absent"]
    assert log_excerpt(tmp_path, names, max_lines=5) == ""
    (tmp_path / "pilotlog.txt").write_text("ok\n")
    assert log_excerpt(tmp_path, [*names, "pilotlog.txt"], max_lines=5) == (
        "== pilotlog.txt: last 1 lines ==\nok"
    )


# --- fuzzing ---------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_entry_value = st.one_of(
    st.none(), st.integers(), st.text(max_size=12), st.sampled_from(["ad:1", "12", SURL, GUID])
)
_report = st.dictionaries(
    st.text(max_size=12) | st.sampled_from(["f.1", "AOD.pool.root.1"]),
    st.dictionaries(st.sampled_from(["surl", "fsize", "adler32", "guid", "x"]), _entry_value)
    | _json,
    max_size=3,
)
# database=None: no .hypothesis/ directory left in the checkout.
_fuzz = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _only_returns_or_bad(directory: Path) -> None:
    try:
        result = read_heartbeat(directory)
    except BadPilotFile as error:
        assert "\n" not in str(error)
    else:
        assert isinstance(result, Heartbeat)
        for output in result.outputs:
            assert isinstance(output, OutputFile)


@_fuzz
@given(content=st.binary(max_size=300))
def test_fuzz_random_bytes(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / HEARTBEAT).write_bytes(content)
    _only_returns_or_bad(directory)


@_fuzz
@given(
    document=st.dictionaries(st.text(max_size=8), _json, max_size=6) | _json,
    report=_report,
    as_string=st.booleans(),
)
def test_fuzz_random_json(
    tmp_path_factory: pytest.TempPathFactory, document: Any, report: Any, as_string: bool
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    if isinstance(document, dict):
        document["xml"] = json.dumps(report) if as_string else report
    (directory / HEARTBEAT).write_text(json.dumps(document))
    _only_returns_or_bad(directory)


def test_log_names_that_leave_the_directory_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "secret.log").write_text("secret\n")
    names = ["../secret.log", "/etc/passwd", "", "."]
    assert log_excerpt(tmp_path / "inner", names, max_lines=5) == ""


def test_a_symlinked_output_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / HEARTBEAT).write_text("{}")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(
        BadPilotFile, match="its directory is unusable: not a directory, or a symbolic link"
    ):
        read_heartbeat(tmp_path / "link")


def test_the_error_text_stays_on_one_line_whatever_the_name(tmp_path: Path) -> None:
    name = "log.1.job.log\nFAKE: injected"
    (tmp_path / name).mkdir()
    with pytest.raises(BadPilotFile) as caught:
        read_text_tail(tmp_path / name, max_lines=1)
    assert caught.value.name == name
    assert str(caught.value) == "log.1.job.log FAKE: injected: not a regular file"
