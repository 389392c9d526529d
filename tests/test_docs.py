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
