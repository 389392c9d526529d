"""MkDocs hook: the decision records stay in ``compressors/decisions/`` (beside the code they justify)
and are built into the site under ``decisions/``, so the docs link to them and ``--strict`` checks
those links and that each record is in the navigation."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

DECISIONS = Path(__file__).resolve().parents[1] / "compressors" / "decisions"


def on_files(files, config):
    for record in sorted(DECISIONS.glob("*.md")):
        files.append(File(f"decisions/{record.name}", src_dir=str(DECISIONS.parent), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
