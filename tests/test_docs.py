"""The documentation: README.md and docs/*.md link only to files and headings that exist, the README stays short."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "checkpoints" / "demo" / "README.md"]
README_MAX_LINES = 160

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\n]|\n(?!\n))*?\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (code blocks left out; repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    """Relative link and image targets of a Markdown page, outside code blocks and inline code."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    """The targets of ``page`` that name a missing file, or a heading its Markdown page lacks."""
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or REPO not in file.parents and file != REPO:
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    return broken


def test_every_relative_link_and_image_in_the_docs_exists():
    assert len(PAGES) >= 10 and all(p.is_file() for p in PAGES)
    found = {p.relative_to(REPO).as_posix(): links(p) for p in PAGES}
    assert sum(map(len, found.values())) >= 30  # the pages do link to each other: the parser found them
    assert any(t.startswith("images/") for t in found["docs/reconstruction.md"])  # images from docs/ are images/...
    broken = {name: broken_links(REPO / name) for name in found}
    assert not {k: v for k, v in broken.items() if v}


def test_the_checker_reports_a_missing_file_a_missing_heading_and_a_file_outside(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    monkeypatch.setitem(globals(), "REPO", repo)
    (repo / "images").mkdir(parents=True)
    (repo / "images" / "a.png").write_bytes(b"")
    (repo / "other.md").write_text("# Other page\n\n## The demo: `make demo`\n")
    (tmp_path / "outside.md").write_text("")
    page = repo / "page.md"
    page.write_text("![a](images/a.png) ![b](images/b.png) [x](other.md#the-demo-make-demo)\n"
                    "[y](other.md#no-such-heading) [z](https://example.org/x) `[c](code.md)`\n"
                    "[out](../outside.md)\n\n```\n[d](fenced.md)\n```\n")
    assert broken_links(page) == ["images/b.png", "other.md#no-such-heading", "../outside.md"]


def test_the_readme_is_a_short_front_door_whose_commands_are_make_targets():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < README_MAX_LINES
    commands = re.findall(r"^make (\w+)", readme, re.M)
    assert commands[:3] == ["install", "demo", "test"]
    targets = set(re.findall(r"^(\w+):", (REPO / "Makefile").read_text(), re.M))
    assert set(commands) <= targets
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI runs the README's test command
    assert "docs/images/compare_val800-819_2026-12-03.png" in links(REPO / "README.md")
    for page in (REPO / "docs").glob("*.md"):  # the README's map names every page
        assert f"(docs/{page.name})" in readme, page.name
