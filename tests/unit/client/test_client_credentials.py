"""The credentials file: where it is, its modes, atomic writes, and what reading refuses."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.client import Credentials, CredentialsStore, config_dir, credentials_path
from confide.errors import UsageError

URL = "https://operator.test"
TOKEN = "cft_secret-token"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/a"}, "/xdg/confide"),
        ({"XDG_CONFIG_HOME": "", "HOME": "/home/a"}, "/home/a/.config/confide"),
        ({"XDG_CONFIG_HOME": "relative", "HOME": "/home/a"}, "/home/a/.config/confide"),
        ({"HOME": "/home/a"}, "/home/a/.config/confide"),
    ],
)
def test_config_dir_follows_xdg(environ: dict[str, str], expected: str) -> None:
    assert config_dir(environ) == Path(expected)
    assert credentials_path(environ) == Path(expected) / "credentials.json"


def test_save_makes_a_private_folder_and_file(tmp_path: Path) -> None:
    store = CredentialsStore(tmp_path / "config" / "confide" / "credentials.json")
    store.save(Credentials(URL + "/", TOKEN))
    assert _mode(store.path.parent) == 0o700 and _mode(store.path) == 0o600
    assert json.loads(store.path.read_text()) == {"version": 1, "url": URL, "token": TOKEN}
    loaded = store.load()
    assert loaded == Credentials(URL, TOKEN)
    assert loaded is not None and TOKEN not in repr(loaded)


def test_save_replaces_atomically_and_tightens_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "confide"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    store = CredentialsStore(folder / "credentials.json")
    store.save(Credentials(URL, TOKEN))
    store.save(Credentials("https://other.test", "second"))
    assert _mode(folder) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["credentials.json"]
    assert store.load() == Credentials("https://other.test", "second")


def test_a_missing_file_is_none_and_delete_says_whether_it_existed(tmp_path: Path) -> None:
    store = CredentialsStore(tmp_path / "credentials.json")
    assert store.load() is None
    assert store.delete() is False
    store.save(Credentials(URL, TOKEN))
    assert store.delete() is True and not store.path.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
def test_a_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    store = CredentialsStore(tmp_path / "credentials.json")
    store.save(Credentials(URL, TOKEN))
    store.path.chmod(mode)
    with pytest.raises(UsageError) as err:
        store.load()
    message = str(err.value)
    assert f"readable by others (mode {mode:04o})" in message
    assert f"chmod 600 {store.path}" in message and "\n" not in message
    assert TOKEN not in message


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    real = CredentialsStore(tmp_path / "real.json")
    real.save(Credentials(URL, TOKEN))
    link = tmp_path / "credentials.json"
    link.symlink_to(real.path)
    with pytest.raises(UsageError, match="not a link"):
        CredentialsStore(link).load()


def _written(tmp_path: Path, content: bytes) -> CredentialsStore:
    path = tmp_path / "credentials.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return CredentialsStore(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "not a Confide credentials file"),
        (b'{"version": 1, "url": "https://a", "token": "t", "url": "https://b"}', "not a Confide"),
        (b'{"url": "https://a", "token": "t"}', "not a Confide credentials file"),
        (b'{"version": 2, "url": "https://a", "token": "t"}', "version 2"),
        (b'{"version": 1, "url": 1, "token": "t"}', "malformed"),
        (b'{"version": 1, "url": "ftp://a", "token": "t"}', "operator URL"),
        (b'{"version": 1, "url": "https://a", "token": "with space"}', "printable ASCII"),
        (b'{"version": 1, "url": "https://a", "token": ""}', "printable ASCII"),
        (b" " * (64 * 1024 + 1), "larger than"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _written(tmp_path, content).load()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_any_content_loads_or_raises_our_error(tmp_path: Path, content: bytes) -> None:
    try:
        _written(tmp_path, content).load()
    except UsageError:
        pass


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200))
def test_round_trip(tmp_path: Path, token: str) -> None:
    store = CredentialsStore(tmp_path / "rt" / "credentials.json")
    store.save(Credentials(URL, token))
    assert store.load() == Credentials(URL, token)
