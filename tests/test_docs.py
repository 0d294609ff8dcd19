"""The reference pages generated from the code (docs/gen_reference.py) are the committed ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "gen_reference.py"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_reference"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["cli", "config"])
def test_the_committed_reference_page_is_what_the_code_generates(gen, page):
    path = gen.PAGES[page]
    assert path.is_file(), f"{path} is missing: run python docs/gen_reference.py"
    assert path.read_text() == gen.GENERATORS[page](), \
        f"{path.relative_to(gen.ROOT)} differs from the code: run python docs/gen_reference.py"


def test_the_cli_page_lists_every_subcommand_and_flag(gen):
    from unlearnkit.cli import build_parser

    page = gen.cli_page()
    for name, sub, _ in gen._subcommands(build_parser()):
        assert f"## `unlearn {name}`" in page
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in page, (name, flag)


def test_the_config_page_lists_every_key(gen):
    import dataclasses
    import importlib

    page = gen.config_page()
    for _, module, name, _ in gen.CONFIGS:
        for f in dataclasses.fields(getattr(importlib.import_module(module), name)):
            assert f"| `{f.name}` |" in page, (name, f.name)


def test_a_changed_parser_makes_the_check_fail(gen, monkeypatch, tmp_path):
    page = tmp_path / "cli.md"
    page.write_text(gen.cli_page().replace("unlearn train", "unlearn trian", 1))
    monkeypatch.setitem(gen.PAGES, "cli", page)
    monkeypatch.setitem(gen.PAGES, "config", tmp_path / "config.md")
    (tmp_path / "config.md").write_text(gen.config_page())
    assert gen.main(["--check"]) == 1
    page.write_text(gen.cli_page())
    assert gen.main(["--check"]) == 0
