"""The README and docs/ say only what exists: every relative link (and its #anchor) resolves, every `cli.py` command
and option they name is one the CLI has, the README's CLI table lists exactly the CLI's commands, and the README
stays short enough to read in a minute."""

import re
import shlex

import click
import pytest

from conftest import ROOT
from pipeline_cli.commands import cli

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`|```[a-z]*\n(.*?)```", re.DOTALL)


def _anchors(page) -> set[str]:
    """GitHub's anchors for the headings of `page`: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no {path}")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def _cli_invocations(page) -> list[list[str]]:
    """The arguments after `cli.py` in every code span and code block of `page`."""
    found = []
    for span, block in CODE.findall(page.read_text(encoding="utf-8")):
        for line in (span or block).splitlines():
            for match in re.finditer(r"cli\.py\s+([^|;&#]*)", line):
                try:
                    found.append(shlex.split(match.group(1).replace("\\", "")))
                except ValueError:  # an unbalanced quote in prose: the words before it still count
                    found.append(match.group(1).split())
    return [words for words in found if words]


def _check(words: list[str], group: click.Group) -> str | None:
    """Why `cli.py words...` is not a command line the CLI takes (its command, a subcommand, its --options)."""
    name, rest = words[0], words[1:]
    if not re.fullmatch(r"[a-z][a-z-]*", name):
        return None  # a placeholder (`cli.py COMMAND`), not a command name
    command = group.commands.get(name)
    if command is None:
        return f"no command {name!r}"
    if isinstance(command, click.Group) and rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
        return _check(rest, command)
    options = {
        opt for param in command.params for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])
    }
    unknown = [w.split("=")[0] for w in rest if w.startswith("--") and w.split("=")[0] not in options | {"--help"}]
    return f"{name}: no option {', '.join(unknown)}" if unknown else None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_cli_command_named_exists(page):
    problems = {" ".join(words): why for words in _cli_invocations(page) if (why := _check(words, cli))}
    assert not problems, f"{page.relative_to(ROOT)}: {problems}"


def test_the_readme_table_lists_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| (.+?) \| ", table, flags=re.MULTILINE)  # an escaped \| has no spaces around it
    listed = {name for cell in first_cells for name in re.findall(r"`([a-z][a-z-]*)", cell)} - {"command"}
    assert listed == set(cli.commands), f"README lists {sorted(listed)}; the CLI has {sorted(cli.commands)}"


def test_the_readme_reads_in_a_minute():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move detail into docs/"
