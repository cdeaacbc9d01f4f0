"""Tracked text states rules and reasons in the present tense; git keeps the history.

Fails on run dates, commit hashes, issue / stop / session numbers and
first-person narration in the prose of the repository: comments and
docstrings of Python files, comments of YAML, TOML, Makefile and shell files,
and the whole of Markdown and text files. Quotations (text in double quotes,
e.g. a sentence of the paper cited in docs/fidelity.md) and the fixture text
listed in FIXTURES are allowed.
"""
from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_CHECKED = ("README.md",)
"""Files left out of the check (the README is checked once it is rewritten as a user's guide)."""
SUFFIXES = (".py", ".yaml", ".yml", ".md", ".toml", ".cfg", ".txt")
NAMES = ("Makefile", ".ci/run")
FIXTURES: dict[str, tuple[str, ...]] = {}
"""{path: exact texts} that a check would flag but that are test data, not history."""

RULES: dict[str, re.Pattern[str]] = {
    "run date": re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b"),
    "commit hash": re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"),
    "issue/stop/session number": re.compile(
        r"\b(?:issues?|stops?|sessions?|PRs?|pull requests?)\s*#?\d+\b"
        r"|\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|previous|earlier|last) session\b",
        re.IGNORECASE),
    "first person": re.compile(
        r"(?<![\w'./-])(?:I|I'm|I've|I'd|I'll)(?![\w'/.-])|\b(?:[Mm]y|[Mm]yself)\b"
        r"|\b[Ww]e (?:measured|found|tried|ran|re-?ran|saw|got|chose|noticed|observed|timed|checked|fixed|changed"
        r"|replaced|removed|added|switched|dropped|kept|reverted)\b"),
}
QUOTED = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”")


def checked_files() -> list[str]:
    """Tracked files (and new ones git does not ignore) whose prose is checked."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    return sorted(name for name in set(listing)
                  if (name.endswith(SUFFIXES) or name in NAMES or name.endswith("/Makefile"))
                  and name not in NOT_CHECKED and (REPO / name).is_file())


def prose(name: str, text: str) -> list[tuple[int, str]]:
    """(line number, text) of the prose in a file: see the module doc for what counts."""
    if name.endswith(".py"):
        return python_prose(text)
    if name.endswith((".md", ".txt")):
        return list(enumerate(text.splitlines(), 1))
    return [(number, line[line.index("#"):]) for number, line in enumerate(text.splitlines(), 1)
            if re.search(r"(^|\s)#", line)]


def python_prose(text: str) -> list[tuple[int, str]]:
    """Comments and docstrings (module, class, function, attribute) of Python source, by line."""
    found = [(token.start[0], token.string) for token in tokenize.generate_tokens(io.StringIO(text).readline)
             if token.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for statement in body:
            if (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
                    and isinstance(statement.value.value, str)):
                start = statement.lineno
                found += [(start + offset, line) for offset, line in enumerate(statement.value.value.splitlines())]
    return found


def findings(name: str, text: str) -> list[str]:
    """'path:line: rule: text' for every rule a line of prose breaks."""
    allowed = FIXTURES.get(name, ())
    hits = []
    for number, line in prose(name, text):
        for fixture in allowed:
            line = line.replace(fixture, "")
        unquoted = QUOTED.sub('""', line)
        for rule, pattern in RULES.items():
            match = pattern.search(unquoted if rule == "first person" else line)
            if match:
                hits.append(f"{name}:{number}: {rule}: {match.group(0)!r} in {line.strip()[:100]!r}")
    return hits


def test_tracked_text_holds_no_history() -> None:
    hits = [hit for name in checked_files() for hit in findings(name, (REPO / name).read_text(errors="replace"))]
    assert not hits, "history belongs in git, not in tracked text:\n" + "\n".join(hits)


def test_the_check_covers_code_yaml_docs_and_the_ci_script() -> None:
    files = checked_files()
    assert {"Makefile", ".ci/run", "pyproject.toml", "docs/fidelity.md", "wsss_core/pipeline/config.py",
            "search_spaces/pipelines/demo.yaml"} <= set(files)
    assert "README.md" not in files


@pytest.mark.parametrize(("name", "text", "rule"), [
    ("a.py", '"""Faster since 2026-12-07."""\n', "run date"),
    ("a.py", "x = 1  # as in 3e3b333\n", "commit hash"),
    ("a.yaml", "lam: 0.5  # the targets of issue 11\n", "issue/stop/session number"),
    (".ci/run", "# stop 28's CI run filled the disk\n", "issue/stop/session number"),
    ("docs/a.md", "Measured in the fourth session.\n", "issue/stop/session number"),
    ("a.py", "def f():\n    \"\"\"I did not tune this.\"\"\"\n", "first person"),
    ("docs/a.md", "On my machine it takes 3 s.\n", "first person"),
    ("a.toml", "# we measured 1.3x here\n", "first person"),
])
def test_each_rule_catches_its_kind_of_history(name: str, text: str, rule: str) -> None:
    hits = findings(name, text)
    assert len(hits) == 1 and f": {rule}: " in hits[0], hits


@pytest.mark.parametrize(("name", "text"), [
    ("docs/a.md", 'The paper samples one pixel ("we sample only one pixel", App. B).\n'),
    ("a.py", 'KEY = "f2b085394a0fd5153a46"  # a stage key is code, not prose\n'),
    ("a.py", '"""Cache keys hash the config: 20 hex digits."""\n'),
    ("a.yaml", "when: {cam.fsl: true}  # the axis applies with FSL on\n"),
    ("docs/a.md", "Input/output (I/O) is atomic; Table 1 and Fig. 2 map to specs.\n"),
])
def test_rules_and_quotations_pass(name: str, text: str) -> None:
    assert findings(name, text) == []
