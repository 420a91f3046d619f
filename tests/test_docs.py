"""Docs that cannot drift: every setting documented, README commands are the ones CI runs."""

from __future__ import annotations

import re

from support import REPO

from mlbridge.settings import SETTINGS, load_settings

README = (REPO / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    page = (REPO / "docs" / "settings.md").read_text()
    for setting in SETTINGS:
        row = re.search(rf"^\| {setting.name} \|.*$", page, re.MULTILINE)
        assert row, f"docs/settings.md lacks a row for {setting.name}"
        assert setting.env_var in row.group(0)


def test_settings_defaults_and_environment() -> None:
    defaults = load_settings(environ={})
    assert defaults.host == "127.0.0.1" and defaults.port == 0
    assert defaults.token_file == defaults.home / "token"
    custom = load_settings(environ={"MLBRIDGE_PORT": "8123", "MLBRIDGE_STRICT": "yes"})
    assert custom.port == 8123 and custom.strict is True


def test_readme_gives_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README.split("## Demo models")[0], re.DOTALL)
    assert blocks == ["scripts/serve", "scripts/test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^exec scripts/test$", ci, re.MULTILINE)


def test_every_route_is_in_the_readme_endpoint_table() -> None:
    from mlbridge.server.app import ROUTES

    table = README.split("Endpoints")[1].split("##")[0]
    for route in ROUTES:
        path = route.path.replace("/v2/models/{name}/versions/{version}", "...")
        assert route.path in table or path in table, route.path


def test_every_cli_command_is_documented() -> None:
    from mlbridge.cli import main

    for name in main.commands:
        assert f"mlbridge {name}" in README, name
