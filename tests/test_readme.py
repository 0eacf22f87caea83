"""The README's commands name commands and options that exist."""

import re

from registry.cli import cli
from tests.helpers import REPO


def test_readme_names_only_real_commands_and_options():
    text = (REPO / "README.md").read_text()
    used = set(re.findall(r"dsocr-registry ([a-z]+)(?: ([a-z]+))?", text))
    assert len(used) >= 15
    for command, sub in used:
        assert command in cli.commands, command
        group = cli.commands[command]
        if sub and hasattr(group, "commands") and sub not in ("upgrade|current|history",):
            assert sub in group.commands, f"{command} {sub}"
    for command in {command for command, _ in used}:
        line_options = set(re.findall(rf"dsocr-registry {command}[^\\n]*?((?:--[a-z-]+ ?)+)", text))
        params = {opt for p in cli.commands[command].params for opt in getattr(p, "opts", [])}
        for options in line_options:
            for option in options.split():
                if hasattr(cli.commands[command], "commands"):
                    continue
                assert option in params | {"--help"}, f"dsocr-registry {command} {option}"
