"""Published tables come from saved runs: every generated block in README.md and docs/ equals the output of
its command on the committed run JSON (reports/docs.py), and no results table is typed by hand."""

from __future__ import annotations

import re
import shutil

import pytest

from compressors.builders.techniques import TECHNIQUES
from reports.__main__ import main
from reports.docs import ROOT, GeneratedBlockError, blocks, commands, pages, regenerate, run_command, stale_pages

RESULT_HEADER = re.compile(r"^\|\s*configuration\s*\|.*x fp32", re.M)
TECHNIQUE_HEADER = re.compile(r"^\|\s*technique\s*\|\s*family\s*\|", re.M)


def _outside_blocks(text: str) -> str:
    for match in blocks(text):
        text = text.replace(match.group(), "")
    return text


@pytest.mark.slow
def test_every_generated_block_is_the_output_of_its_command():
    stale = []
    for page in pages():
        text = page.read_text()
        for match in blocks(text):
            expected = run_command(match["command"])
            if match["body"] != expected:
                stale.append(f"{page.relative_to(ROOT)}: {match['command']}")
    assert not stale, "stale generated tables (regenerate: python -m reports docs):\n" + "\n".join(stale)


def test_the_readme_and_the_docs_publish_results_and_the_technique_table_only_as_generated_blocks():
    published = {page.relative_to(ROOT).as_posix(): commands(page.read_text()) for page in pages()}
    assert any("--model minilm-sst2" in c for c in published["README.md"]), "the README's results table"
    assert any("--model smollm2-135m" in c for c in published["docs/language-models.md"])
    assert "python -m reports techniques --markdown" in published["docs/techniques.md"]
    typed = [page.relative_to(ROOT).as_posix() for page in pages()
             if RESULT_HEADER.search(_outside_blocks(page.read_text()))
             or TECHNIQUE_HEADER.search(_outside_blocks(page.read_text()))]
    assert not typed, f"results tables typed by hand (publish them with a generated block): {typed}"


def test_every_committed_run_is_published_and_every_published_run_is_committed():
    runs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "runs").glob("*.json")}
    used = {word for page in pages() for command in commands(page.read_text()) for word in command.split()
            if word.endswith(".json")}
    assert runs, "docs/runs/ holds the runs the published tables come from"
    assert used == runs, f"runs published but not committed: {sorted(used - runs)}; committed but unused: " \
                         f"{sorted(runs - used)}"


def test_a_figure_edited_by_hand_is_stale_and_docs_rewrites_it(tmp_path):
    (tmp_path / "docs").mkdir()
    shutil.copytree(ROOT / "docs" / "runs", tmp_path / "docs" / "runs")
    readme = (ROOT / "README.md").read_text()
    block = blocks(readme)[0]
    row = next(line for line in block["body"].splitlines() if line.startswith("| minilm-sst2-fp32"))
    edited = readme.replace(row, re.sub(r"\| [0-9.]+ \|", "| 1.23 |", row, count=1))
    assert edited != readme
    (tmp_path / "README.md").write_text(edited)
    assert stale_pages(tmp_path) == [tmp_path / "README.md"]
    assert regenerate(edited, tmp_path) == readme


def test_the_published_table_names_the_machine_and_its_isa(capsys):
    command = next(c for c in commands((ROOT / "README.md").read_text()) if "table --markdown" in c)
    out = run_command(command)
    first = out.splitlines()[0]
    assert "ISA:" in first and "cores" in first and "commit " in first, first
    assert "| configuration | median ms |" in out and "ms/tok" not in out.split("\n\n")[1]  # no per-token column
    assert "verdict" not in out.split("\n\n")[1]


def test_an_unknown_model_or_a_foreign_command_is_a_clear_error(capsys):
    command = next(c for c in commands((ROOT / "README.md").read_text()) if "table --markdown" in c)
    run = next(word for word in command.split() if word.endswith(".json"))
    assert main(["table", "--markdown", run, "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "minilm-sst2" in err
    with pytest.raises(GeneratedBlockError, match="must be 'python -m reports"):
        regenerate("<!-- generated: rm -rf / -->\n<!-- end generated -->")
    example = "```markdown\n<!-- generated: rm -rf / -->\n...\n<!-- end generated -->\n```\n"
    assert regenerate(example) == example and commands(example) == []  # a marker shown in a code fence
    with pytest.raises(GeneratedBlockError, match="exited 2"):
        regenerate(f"<!-- generated: python -m reports table --markdown {run} --model nope -->\n<!-- end generated -->")


def test_the_technique_table_lists_every_registered_technique_and_family():
    out = run_command("python -m reports techniques --markdown")
    listed = set(re.findall(r"^\| `([^`]+)`", out, re.M))
    assert set(TECHNIQUES.names()) <= listed
    assert {example for _pattern, example, _t in TECHNIQUES.families()} <= listed
    onnx = next(line for line in out.splitlines() if line.startswith("| `onnx-int8` |"))
    assert "ONNX Runtime" in onnx and "onnx-int8" in onnx


# ----------------------------------------------------------------------------- links that work on GitHub too

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"\[(?:[^\[\]\n]|\[[^\]\n]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are code, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _relative_links(text: str) -> list[str]:
    found = INLINE_LINK.findall(_prose(text)) + REFERENCE_LINK.findall(_prose(text))
    return [link for link in found if not re.match(r"[a-z][a-z0-9+.-]*:", link, re.I)]  # http:, mailto:, ...


def _anchors(text: str) -> set[str]:
    """The ids Python-Markdown's toc extension gives the headings of ``text`` (its default slugify; an
    attr_list ``{#id}`` wins; a repeated heading gets ``_1``, ``_2``)."""
    import unicodedata

    ids: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        explicit = re.search(r"\{\s*#([\w-]+)[^}]*\}\s*$", heading)
        if explicit:
            ids.add(explicit.group(1))
            continue
        words = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        words = re.sub(r"(\*\*|__|\*|_)(.+?)\1", r"\2", words)
        words = unicodedata.normalize("NFKD", words).encode("ascii", "ignore").decode("ascii")
        slug = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", words).strip().lower())
        unique, n = slug, 0
        while unique in ids:
            n += 1
            unique = f"{slug}_{n}"
        ids.add(unique)
    return ids


def broken_links(root=ROOT) -> list[str]:
    """Every relative link in README.md and docs/**/*.md whose file is not in the repository, or whose
    ``#anchor`` names no heading of the Markdown file it points to."""
    broken = []
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        for link in _relative_links(text):
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root).as_posix()}: {link}"
            if not target.exists() or not target.is_relative_to(root):
                broken.append(f"{where} (no such file in the repository)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text(encoding="utf-8")):
                broken.append(f"{where} (no heading with that anchor)")
    return broken


def test_every_relative_link_in_the_readme_and_the_docs_names_a_file_in_the_repository():
    broken = broken_links()
    assert not broken, "broken links (they are dead on GitHub even where the site builds):\n" + "\n".join(broken)


def test_the_link_check_finds_a_dead_link_a_dead_anchor_and_ignores_code(tmp_path):
    (tmp_path / "docs" / "decisions").mkdir(parents=True)
    (tmp_path / "docs" / "decisions" / "x.md").write_text("# The `x` record: **why**\n\n## Evidence\n")
    (tmp_path / "docs" / "page.md").write_text(
        "[ok](decisions/x.md#the-x-record-why) [ok too](decisions/x.md#evidence) [web](https://example.com/a.md)\n"
        "[gone](decisions/y.md) [bad anchor](decisions/x.md#nope) ![picture](shot.png)\n"
        "`[code](not/a/link.md)`\n```\n[fenced](nor/this.md)\n```\n[here](#missing)\n[ref]: ../nowhere.md\n"
    )
    (tmp_path / "README.md").write_text("[docs](docs/page.md) [old](compressors/decisions/x.md)\n")
    assert broken_links(tmp_path) == [
        "README.md: compressors/decisions/x.md (no such file in the repository)",
        "docs/page.md: decisions/y.md (no such file in the repository)",
        "docs/page.md: decisions/x.md#nope (no heading with that anchor)",
        "docs/page.md: shot.png (no such file in the repository)",
        "docs/page.md: #missing (no heading with that anchor)",
        "docs/page.md: ../nowhere.md (no such file in the repository)",
    ]


def _two_commands(text: str) -> str:
    section = text[text.index("## The two commands"):]
    start = section.index("```bash\n")
    return section[start:section.index("```\n", start + 8)]


def test_the_two_commands_are_the_same_everywhere_and_need_nothing_beside_the_clone():
    readme = _two_commands((ROOT / "README.md").read_text())
    for page in ("docs/index.md", "docs/running.md"):
        assert _two_commands((ROOT / page).read_text()) == readme, f"{page}: the two commands differ from README.md"
    # a stranger's clone has no ../shared beside it: nothing a user or CI runs may point there
    for path in ("README.md", "tox.ini", ".ci/run", *sorted(p.relative_to(ROOT).as_posix() for p in pages()),
                 *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / ".github" / "workflows").glob("*.yml"))):
        assert "../shared" not in (ROOT / path).read_text(), f"{path} names ../shared"
    # the CPU build of torch on Linux is said where the install happens
    assert "export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in readme


def test_every_decision_record_the_code_names_exists():
    named = {}
    code = [p for folder in ("compressors", "bench", "reports", "tests") for p in sorted((ROOT / folder).rglob("*"))
            if p.suffix in (".py", ".toml")]
    for path in [ROOT / "pyproject.toml", *code]:
        for record in re.findall(r"docs/decisions/[\w.-]+\.md", path.read_text(encoding="utf-8")):
            named.setdefault(record, path.relative_to(ROOT).as_posix())
    assert len(named) >= 10  # the docstrings and comments link their records
    missing = [f"{source}: {record}" for record, source in named.items() if not (ROOT / record).is_file()]
    assert not missing, "records named in code that do not exist:\n" + "\n".join(missing)
