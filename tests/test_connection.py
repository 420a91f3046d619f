"""The connection files: published in order, read by everyone, removed only by their server."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlbridge.auth import write_private
from mlbridge.connection import (
    Connection,
    connection_path,
    find_connection,
    is_live,
    process_alive,
    publish,
    read_connection,
    unpublish,
    wait_for_exit,
    wait_for_server,
)
from mlbridge.errors import ConfigError

URL = "http://127.0.0.1:8123"


def connection(home: Path, pid: int = 4242, **fields) -> Connection:
    return Connection(url=URL, pid=pid, token_file=home / "token", **fields)


def never_exits() -> int | None:
    return None


def test_publish_writes_both_files_private_and_read_gives_them_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    published = connection(home, models=["mnist"], version="0.1.0", started="now")
    publish(home, published, "s3cret")
    for path in (connection_path(home), home / "token"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_connection(home) == published
    assert read_connection(home).secret() == "s3cret"
    assert json.loads(connection_path(home).read_text())["token_file"] == str(home / "token")


def test_unpublish_removes_both_files_of_its_own_server_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    mine, theirs = connection(home, pid=1), connection(home, pid=2)
    publish(home, theirs, "theirs")
    unpublish(home, mine)  # another server has replaced the files since: keep them
    assert find_connection(home) == theirs and (home / "token").exists()
    unpublish(home, theirs)
    assert find_connection(home) is None and not (home / "token").exists()


def test_no_file_says_how_to_start_a_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist\); start one with 'mlbridge serve'"):
        read_connection(tmp_path)
    assert find_connection(tmp_path) is None


MALFORMED = [
    ("{", "cannot read"),
    ("[1, 2]", "expected a JSON object"),
    ('{"url": "x", "pid": "12", "token_file": "t"}', "expected string 'url', integer 'pid'"),
    ('{"pid": 12, "token_file": "t"}', "expected string 'url', integer 'pid'"),
    ('{"url": "x", "pid": 12}', "string 'token_file'"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_a_malformed_file_is_a_config_error_naming_it(tmp_path: Path, text, message) -> None:
    write_private(connection_path(tmp_path), text)
    with pytest.raises(ConfigError) as caught:
        read_connection(tmp_path)
    assert str(connection_path(tmp_path)) in caught.value.message
    assert message in caught.value.message
    assert find_connection(tmp_path) is None


def test_optional_fields_default_and_odd_models_are_ignored(tmp_path: Path) -> None:
    document = {"url": URL, "pid": 7, "token_file": "/t", "models": "mnist"}
    write_private(connection_path(tmp_path), json.dumps(document))
    assert read_connection(tmp_path) == Connection(URL, 7, Path("/t"))


def test_a_file_open_to_others_or_in_an_open_folder_is_not_trusted(tmp_path: Path) -> None:
    publish(tmp_path, connection(tmp_path), "s")
    connection_path(tmp_path).chmod(0o644)
    with pytest.raises(ConfigError, match=r"open to others \(mode 644\); run: chmod 600"):
        read_connection(tmp_path)
    connection_path(tmp_path).chmod(0o600)
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(ConfigError, match=r"writable by others \(mode 777\)"):
            read_connection(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_a_symlinked_connection_file_is_not_trusted(tmp_path: Path) -> None:
    elsewhere = tmp_path / "planted.json"
    write_private(elsewhere, json.dumps({"url": URL, "pid": 7, "token_file": "/t"}))
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    connection_path(home).symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_connection(home)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://evil.example:80", "not on this machine"),
        ("http://10.0.0.1:8000", "not on this machine"),
        ("http://127.0.0.1:8000\n-d @/etc/passwd", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
    ],
)
def test_a_url_off_this_machine_or_with_control_characters_is_refused(
    tmp_path: Path, url: str, message: str
) -> None:
    write_private(connection_path(tmp_path), json.dumps({"url": url, "pid": 7, "token_file": "/t"}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_connection(tmp_path)


def test_wait_for_server_returns_once_the_file_names_the_pid(tmp_path: Path) -> None:
    publish(tmp_path, connection(tmp_path, pid=4242), "s")
    assert wait_for_server(tmp_path, 4242, 1, never_exits).pid == 4242


def test_wait_for_server_ignores_a_stale_file_until_time_runs_out(tmp_path: Path) -> None:
    publish(tmp_path, connection(tmp_path, pid=1), "s")  # an earlier server's
    with pytest.raises(ConfigError, match=r"the server did not start within 0\.2 s"):
        wait_for_server(tmp_path, 4242, 0.2, never_exits)


def test_wait_for_server_stops_when_the_child_exits(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"the server exited \(status 3\) before it was ready"):
        wait_for_server(tmp_path, 4242, 10, lambda: 3)


def test_wait_for_exit_sees_a_removed_file_or_a_dead_process(tmp_path: Path) -> None:
    assert wait_for_exit(tmp_path, 4242, 0.1)  # no file at all
    publish(tmp_path, connection(tmp_path, pid=os.getpid()), "s")
    assert not wait_for_exit(tmp_path, os.getpid(), 0.2)  # this process lives on
    assert wait_for_exit(tmp_path, dead_pid(), 0.2)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_is_live_needs_the_process_and_the_port(tmp_path: Path) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        assert is_live(Connection(url, os.getpid(), tmp_path / "t"))
        assert not is_live(Connection(url, dead_pid(), tmp_path / "t"))
    assert not is_live(Connection(url, os.getpid(), tmp_path / "t"))  # closed now
    assert not is_live(Connection("not a url", os.getpid(), tmp_path / "t"))


def test_process_alive() -> None:
    assert process_alive(os.getpid()) and not process_alive(dead_pid())
    assert not process_alive(0) and not process_alive(-1)
