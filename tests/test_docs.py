"""The repository explains itself: no pointer to a design document outside it, every relative link in the
docs resolves, and the license the package declares is the one the repository carries."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_DIRS = ("service", "training", "tests", "scripts", "deploy", "docs", "loadtests", ".ci")
TOP_FILES = ("README.md", "Dockerfile", "docker-compose.yml", "pyproject.toml", "Makefile")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def text_files() -> list[Path]:
    files = [ROOT / name for name in TOP_FILES]
    for folder in TEXT_DIRS:
        files += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in {".py", ".md", ".yml", ".yaml", ".sh", ".conf", ".in", ""}
        ]
    return [p for p in files if p.exists()]


def test_no_reference_to_an_outside_design_document() -> None:
    outside = re.compile(r"DESIGN \u00a7|\.\.[/]shared")  # spelt so this line does not match itself
    offenders = [
        str(p.relative_to(ROOT))
        for p in text_files()
        if p != Path(__file__).resolve() and outside.search(p.read_text(errors="ignore"))
    ]
    assert offenders == [], f"explain it in docs/architecture.md instead: {offenders}"


def test_relative_links_in_the_docs_resolve() -> None:
    broken = []
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} → {target}")
    assert broken == []


def test_license_file_matches_the_declared_license() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
