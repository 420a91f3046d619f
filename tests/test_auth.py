"""Secret files: atomic, 0600, never through symlinks or writable folders; constant-time checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlbridge.auth import (
    TokenAuthenticator,
    bearer_token,
    new_secret,
    read_secret,
    secure_folder,
    write_private,
)
from mlbridge.errors import ConfigError, Unauthorized


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_has_256_bits_and_is_fresh() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) >= 43 for s in secrets)  # 32 bytes in URL-safe base64


def test_written_file_is_0600_and_folder_0700(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_private(home / "token", "s3cret\n")
    assert mode(home / "token") == 0o600
    assert mode(home) == 0o700
    assert read_secret(home / "token") == "s3cret"
    assert [p.name for p in home.iterdir()] == ["token"]  # no temporary left behind


def test_file_is_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "token", "x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "token") == 0o600


def test_refuses_to_write_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "token").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_private(tmp_path / "token", "secret")
    assert target.read_text() == "keep"


def test_refuses_a_folder_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        secure_folder(shared)


def test_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_secret(token)


def test_authenticator_messages_point_at_the_token_file(tmp_path: Path) -> None:
    check = TokenAuthenticator("right", tmp_path / "token").check
    check("right")
    with pytest.raises(Unauthorized, match=f"missing secret.*{tmp_path / 'token'}"):
        check(None)
    with pytest.raises(Unauthorized, match="wrong secret") as caught:
        check("wrong")
    assert "right" not in caught.value.message


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), (None, None), ("", None)],
)
def test_bearer_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
