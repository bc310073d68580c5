"""The docs stay navigable and true: every relative link in README.md, docs/*.md and bench/RESULTS.md resolves (file and
#anchor), README stays a short entry point, and docs/cli.md documents every `cloudtune` command and flag the parser has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "RESULTS.md"]
README_MAX_BYTES = 12 * 1024
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _text(path: Path) -> str:
    return FENCE.sub("", path.read_text(encoding="utf-8"))  # a link-like string in a code block is not a link


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", _text(path), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _links():
    for doc in DOCS:
        for target in LINK.findall(_text(doc)):
            if not re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked
                yield pytest.param(doc, target, id=f"{doc.relative_to(ROOT)}->{target}")


@pytest.mark.parametrize("doc, target", list(_links()))
def test_relative_links_resolve(doc, target):
    path, _, anchor = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), f"{doc.relative_to(ROOT)}: link to missing {path}"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{doc.relative_to(ROOT)}: no heading #{anchor} in {dest.relative_to(ROOT)}"


def test_the_docs_exist_and_readme_is_a_short_entry_point():
    assert all(doc.exists() for doc in DOCS) and len(DOCS) >= 6
    size = (ROOT / "README.md").stat().st_size
    assert size < README_MAX_BYTES, f"README.md is {size} bytes: move detail to docs/ (limit {README_MAX_BYTES})"


def _commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices.items())


def _section(text: str, command: str) -> str:
    """The `### <command> ...` section of docs/cli.md, up to the next heading."""
    match = re.search(rf"^### {re.escape(command)}(?=[ \t]|$).*?$(.*?)(?=^#)", text + "\n#", re.S | re.M)
    assert match, f"docs/cli.md has no '### {command}' section"
    return match.group(1)


@pytest.mark.parametrize("command, parser", _commands(), ids=[name for name, _ in _commands()])
def test_cli_md_documents_every_command_and_flag(command, parser):
    section = _section((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"), command)
    for action in parser._actions:
        flags = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        for flag in flags:
            assert re.search(rf"{re.escape(flag)}\b", section), f"docs/cli.md '### {command}' does not mention {flag}"
        if not action.option_strings and action.choices:  # subactions such as `db init|schema`
            for choice in action.choices:
                assert re.search(rf"\b{re.escape(choice)}\b", section), f"docs/cli.md '### {command}' does not mention {choice}"
