"""MkDocs hooks: the decision records stay in ``compressors/decisions/`` (beside the code they justify)
and are built into the site under ``decisions/``, so the docs link to them and ``--strict`` checks
those links and that each record is in the navigation. The changelog stays at the repository's root
(where people look for it) and is the body of the site's ``changelog.md`` page."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
DECISIONS = ROOT / "compressors" / "decisions"
CHANGELOG = ROOT / "CHANGELOG.md"


def on_files(files, config):
    for record in sorted(DECISIONS.glob("*.md")):
        files.append(File(f"decisions/{record.name}", src_dir=str(DECISIONS.parent), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "changelog.md":
        return CHANGELOG.read_text()
    return markdown
