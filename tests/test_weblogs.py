"""The web area: job logs published (act.atlas.web_area), old days removed (weblogs daemon)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from act.atlas import spool, web_area
from act.atlas.config import Context
from act.atlas.fetcher import log_url
from act.atlas.web_area import Published, publish, relative_stem, web_root
from act.atlas.weblogs import DAEMON, expired_days, run_once
from act.common.daemon import PROCESS_UMASK
from act.common.db import Database
from act.service.actd import main as actd_main
from act.service.daemon import main as daemon_main
from act.service.daemons import resolve
from act.service.settings import Settings
from tests.support.contexts import daemon_context
from tests.support.translate_cases import NATIVE

CREATED = datetime(2026, 3, 4, 23, 30, tzinfo=timezone.utc)
PANDA_ID = 4_200_000_001
QUEUE = NATIVE.name  # its log_url_prefix: https://act.example.org/jobs


def settings(tmp_path: Path, **weblogs_section: object) -> Settings:
    return Settings.model_validate(
        {
            "root": str(tmp_path / "root"),
            "weblogs": {"dir": str(tmp_path / "web"), **weblogs_section},
        }
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def output_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    directory = tmp_path / "ce-output"
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    directory.mkdir(exist_ok=True)
    return directory


def publish_job(
    s: Settings,
    out_dir: Path | None,
    *,
    url: str | None = None,
    names: tuple[str, ...] = ("pilot.out",),
    diagnostics: str | None = None,
) -> Published:
    return publish(
        s,
        panda_id=PANDA_ID,
        queue=QUEUE,
        log_url=url,
        created_at=CREATED,
        output_dir=out_dir,
        stdout_names=names,
        diagnostics=diagnostics,
    )


# -- where -----------------------------------------------------------------------------------------


def test_web_root_is_the_configured_dir_or_under_the_state_root(tmp_path: Path) -> None:
    assert web_root(settings(tmp_path)) == tmp_path / "web"
    assert web_root(Settings(root=str(tmp_path))) == tmp_path / "weblogs"


def test_the_stem_follows_the_url_date_and_falls_back_to_the_creation_day() -> None:
    fetched = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    url = log_url(NATIVE, PANDA_ID, fetched)
    assert url == f"https://act.example.org/jobs/2026-03-01/{QUEUE}/{PANDA_ID}.out"
    stem = relative_stem(log_url=url, queue=QUEUE, panda_id=PANDA_ID, created_at=CREATED)
    assert stem == PurePosixPath("2026-03-01", QUEUE, str(PANDA_ID))
    fallback = PurePosixPath("2026-03-04", QUEUE, str(PANDA_ID))
    for other in (
        None,
        "",
        f"https://logs/2026-03-01/OTHER_QUEUE/{PANDA_ID}.out",  # another queue
        f"https://logs/2026-03-01/{QUEUE}/{PANDA_ID + 1}.out",  # another job
        f"https://logs/2026-03-01/{QUEUE}/{PANDA_ID}.log",
        f"https://logs/2026-13-45/{QUEUE}/{PANDA_ID}.out",  # not a date
        f"https://logs/../{QUEUE}/{PANDA_ID}.out",
        f"{PANDA_ID}.out",
        "http://[::1/x",  # not a URL
    ):
        assert relative_stem(log_url=other, queue=QUEUE, panda_id=PANDA_ID, created_at=CREATED) == (
            fallback
        ), other
    # The creation day is taken in UTC: 23:30 UTC on the 4th is the 5th in UTC+2.
    local = CREATED.astimezone(timezone(timedelta(hours=2)))
    assert relative_stem(log_url=None, queue=QUEUE, panda_id=PANDA_ID, created_at=local) == fallback


@pytest.mark.parametrize("queue", ["", ".", "..", ".hidden", "a/b", "a\nb", "a b", "x" * 300])
def test_a_queue_name_unusable_as_a_directory_is_refused(queue: str) -> None:
    with pytest.raises(ValueError, match="not usable as a directory name"):
        relative_stem(log_url=None, queue=queue, panda_id=PANDA_ID, created_at=CREATED)


def test_a_naive_creation_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        relative_stem(log_url=None, queue=QUEUE, panda_id=1, created_at=datetime(2026, 1, 1))


# -- publish ---------------------------------------------------------------------------------------


def test_publish_copies_the_pilot_log_and_diagnostics_world_readable(tmp_path: Path) -> None:
    s = settings(tmp_path)
    out_dir = output_dir(
        tmp_path, {"pilot.out": b"pilot says hi\n", "gmlog/errors": b"lrms: exit 1\n"}
    )
    url = log_url(NATIVE, PANDA_ID, datetime(2026, 3, 1, tzinfo=timezone.utc))
    assert url is not None
    old = os.umask(0o077)  # the modes do not depend on the umask
    try:
        result = publish_job(s, out_dir, url=url, names=("missing", "pilot.out"), diagnostics="x")
    finally:
        os.umask(old)
    day = tmp_path / "web" / "2026-03-01"
    assert result == Published(
        out=day / QUEUE / f"{PANDA_ID}.out", log=day / QUEUE / f"{PANDA_ID}.log"
    )
    assert result.out is not None and result.log is not None
    assert result.out.read_bytes() == b"pilot says hi\n"
    assert result.log.read_bytes() == b"lrms: exit 1\nx\n"
    assert mode(result.out) == mode(result.log) == 0o644
    assert mode(tmp_path / "web") == mode(day) == mode(day / QUEUE) == 0o755
    # The URL and the file agree: prefix + the path under the web root.
    prefix = NATIVE.log_url_prefix
    assert prefix is not None and url.startswith(prefix)
    assert url[len(prefix) :] == "/" + result.out.relative_to(tmp_path / "web").as_posix()
    assert urlsplit(url).path.endswith(result.out.relative_to(tmp_path / "web").as_posix())
    assert sorted(p.name for p in (day / QUEUE).iterdir()) == [f"{PANDA_ID}.log", f"{PANDA_ID}.out"]


def test_publishing_again_replaces_and_nothing_new_keeps_the_old_copy(tmp_path: Path) -> None:
    s = settings(tmp_path)
    out_dir = output_dir(tmp_path, {"pilot.out": b"first\n"})
    first = publish_job(s, out_dir, diagnostics="held")
    (out_dir / "pilot.out").write_bytes(b"second, longer\n")
    again = publish_job(s, out_dir, diagnostics="held again\n")
    assert again == first
    assert again.out is not None and again.out.read_bytes() == b"second, longer\n"
    assert again.log is not None and again.log.read_text() == "held again\n"
    (out_dir / "pilot.out").unlink()
    assert publish_job(s, out_dir) == Published(out=None, log=None)
    assert again.out.read_bytes() == b"second, longer\n"
    assert [p.name for p in again.out.parent.iterdir() if p.name.startswith(".")] == []


def test_a_symlinked_stdout_or_gmlog_is_not_followed(tmp_path: Path) -> None:
    s = settings(tmp_path)
    out_dir = output_dir(tmp_path, {"real.out": b"the real pilot log\n"})
    (out_dir / "pilot.out").symlink_to("/etc/passwd")
    (out_dir / "gmlog").symlink_to("/etc")  # gmlog/errors would then be /etc/errors
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0\n")
    (out_dir / "link.out").symlink_to(secret)

    assert publish_job(s, out_dir, names=("pilot.out", "link.out")) == Published(None, None)
    assert not (tmp_path / "web").exists()
    result = publish_job(s, out_dir, names=("pilot.out", "real.out"))
    assert result.out is not None and result.out.read_bytes() == b"the real pilot log\n"
    assert result.log is None


def test_only_regular_files_directly_in_the_output_dir_are_read(tmp_path: Path) -> None:
    s = settings(tmp_path)
    out_dir = output_dir(tmp_path, {"sub/pilot.out": b"nested\n"})
    os.mkfifo(out_dir / "fifo.out")  # would block a plain open()
    names = ("fifo.out", "sub", "sub/pilot.out", "../ce-output/sub/pilot.out", "..", "")
    assert publish_job(s, out_dir, names=names) == Published(None, None)
    (out_dir / "gmlog").mkdir()
    (out_dir / "gmlog" / "errors").mkdir()  # a directory, not the errors file
    assert publish_job(s, out_dir, names=names) == Published(None, None)


def test_an_oversized_log_keeps_its_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_area, "MAX_COPY_BYTES", 1000)
    data = b"".join(b"line %04d\n" % n for n in range(500))  # 5000 bytes
    out_dir = output_dir(tmp_path, {"pilot.out": data, "gmlog/errors": data[:999]})
    result = publish_job(settings(tmp_path), out_dir)
    assert result.out is not None and result.log is not None
    copied = result.out.read_bytes()
    head, _, tail = copied.partition(b"\n")
    assert head == b"[act: the first 4000 of 5000 bytes are left out]"
    assert tail == data[-1000:] and tail.endswith(b"line 0499\n")
    assert result.log.read_bytes() == data[:999]  # under the limit: whole


def test_no_stdout_gives_no_out_and_diagnostics_alone_a_log(tmp_path: Path) -> None:
    s = settings(tmp_path)
    result = publish_job(s, None, diagnostics="CE said: queue full")
    assert result.out is None and result.log is not None
    assert result.log.read_text() == "CE said: queue full\n"
    assert not result.log.with_suffix(".out").exists()
    missing = tmp_path / "no-such-dir"
    assert publish_job(s, missing, diagnostics="again") == Published(out=None, log=result.log)
    assert publish_job(s, missing) == Published(out=None, log=None)


def test_a_web_area_that_cannot_be_written_raises_oserror(tmp_path: Path) -> None:
    (tmp_path / "web").write_text("a file where the web root should be")
    out_dir = output_dir(tmp_path, {"pilot.out": b"x"})
    with pytest.raises(OSError):
        publish_job(settings(tmp_path), out_dir)


def test_web_files_are_world_readable_and_act_s_own_files_are_not(tmp_path: Path) -> None:
    """Under act's process umask (027), what act makes without explicit modes stays private."""
    old = os.umask(PROCESS_UMASK)
    try:
        s = settings(tmp_path)
        result = publish_job(s, output_dir(tmp_path, {"pilot.out": b"x"}))
        reply = spool.write_reply(
            spool.spool_dir(s.root), queue=QUEUE, api="new", label="managed", reply="{}"
        )
        database = Database(s.db_url())
        database.run(lambda conn: conn.execute(sa.text("create table t (x integer)")))
        database.dispose()
        ce_output = tmp_path / "root" / "ce-jobs" / "1" / "output"
        ce_output.mkdir(parents=True)
        log_file = tmp_path / "root" / "log" / "translator.log"
        log_file.parent.mkdir()
        handler = logging.handlers.WatchedFileHandler(log_file)  # as act.common.logs.setup
        handler.close()
    finally:
        os.umask(old)
    assert result.out is not None and mode(result.out) & 0o004
    db_file = tmp_path / "root" / "act.db"
    for private in (reply, reply.parent, ce_output, ce_output.parent, log_file, db_file):
        assert mode(private) & 0o007 == 0, private


@pytest.mark.parametrize("main", [daemon_main, actd_main])
def test_act_daemon_and_actd_set_act_s_umask(main: Callable[[list[str]], int]) -> None:
    old = os.umask(0o022)
    try:
        # The umask is set first: even a run that stops at once (config missing) has it.
        assert main(["--config", "/nonexistent/act.yaml", *(["x"] if main is daemon_main else [])])
        assert os.umask(0o022) == PROCESS_UMASK == 0o027
    finally:
        os.umask(old)


# -- the weblogs daemon ----------------------------------------------------------------------------


def _tree(root: Path, *names: str) -> None:
    for name in names:
        (root / name / QUEUE).mkdir(parents=True)
        (root / name / QUEUE / "1.out").write_text("log")


def test_old_day_directories_are_found_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "web"
    _tree(root, "2026-01-01", "2026-01-30", "2026-01-31", "2026-02-01", "notes", "2026-1-1")
    (root / "2026-02-30").mkdir()  # looks like a date, is none
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    # 30 days back is 2026-01-31 12:00: days that ended before then go.
    assert expired_days(root, retention_days=30, now=now) == [
        root / "2026-01-01",
        root / "2026-01-30",
    ]
    assert expired_days(tmp_path / "none", retention_days=30, now=now) == []


def test_the_daemon_removes_old_days_and_never_follows_symlinks(
    sqlite_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, retention_days=2)
    root = web_root(s)
    today = datetime.now(timezone.utc).date()
    old, older = (f"{today - timedelta(days=n)}" for n in (5, 6))
    _tree(root, old, f"{today}", "keep-me")
    (root / "2000-01-01.txt").write_text("not a day directory")
    target = tmp_path / "elsewhere"
    _tree(target, "inside")
    (root / older).symlink_to(target)  # an old "day" that is a link: unlinked, target kept
    (root / old / QUEUE / "link").symlink_to(target)  # a link inside a day: not followed

    ctx: Context = daemon_context(sqlite_db, s, "weblogs", options=DAEMON.options())
    with caplog.at_level(logging.INFO, logger="act.weblogs"):
        assert run_once(ctx) is False

    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["2000-01-01.txt", f"{today}", "keep-me"]
    )
    assert (target / "inside" / QUEUE / "1.out").read_text() == "log"
    removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed")]
    assert len(removed) == 2 and any(old in m for m in removed) and any(older in m for m in removed)
    run_once(ctx)  # nothing left to do
    assert (root / f"{today}" / QUEUE / "1.out").exists()


def test_the_weblogs_daemon_is_registered() -> None:
    assert resolve("weblogs") is DAEMON
