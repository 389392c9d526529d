"""Published tables are generated, not typed: each one in README.md and docs/ sits between

    <!-- generated: python -m reports table --markdown docs/runs/RUN.json --model NAME -->
    ...
    <!-- end generated -->

and is the output of the command in the marker (run from the repository root). ``python -m reports docs``
rewrites every such block from its command; ``--check`` only says which are stale (exit 1).
tests/test_docs.py checks the same in CI. A new measurement = save a run, copy its JSON under docs/runs/,
regenerate.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from compressors import CompressbenchError

ROOT = Path(__file__).resolve().parents[1]
PREFIX = ("python", "-m", "reports")
BLOCK = re.compile(r"(?P<open><!-- generated: (?P<command>[^\n]*?) -->\n)(?P<body>.*?)"
                   r"(?P<close><!-- end generated -->)", re.S)


class GeneratedBlockError(CompressbenchError):
    """A generated block whose command is not a ``python -m reports`` command, or fails."""


def pages(root: Path = ROOT) -> list[Path]:
    """The pages whose tables are published: README.md and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def run_command(command: str, root: Path = ROOT) -> str:
    """The output of one marker's command, run as written (``python -m reports ...``, this interpreter) from
    ``root``, the folder its paths are relative to."""
    argv = shlex.split(command)
    if tuple(argv[:3]) != PREFIX or len(argv) < 4:
        raise GeneratedBlockError(f"generated block command {command!r}: must be 'python -m reports ...'")
    if argv[3] == "docs":
        raise GeneratedBlockError(f"generated block command {command!r}: 'docs' cannot generate a block")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GeneratedBlockError(f"generated block command {command!r} exited {proc.returncode}: "
                                  f"{proc.stderr.strip()}")
    return proc.stdout


FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)


def _prose_and_code(text: str) -> list[tuple[bool, str]]:
    """``text`` cut into (is fenced code, part): a marker shown inside a code fence is an example, not a block."""
    parts, start = [], 0
    for fence in FENCE.finditer(text):
        parts += [(False, text[start:fence.start()]), (True, fence.group())]
        start = fence.end()
    return parts + [(False, text[start:])]


def regenerate(text: str, root: Path = ROOT) -> str:
    """``text`` with each generated block's body replaced by its command's output."""
    def fill(match: re.Match) -> str:
        body = run_command(match["command"], root)
        return match["open"] + body + ("" if body.endswith("\n") else "\n") + match["close"]

    return "".join(part if code else BLOCK.sub(fill, part) for code, part in _prose_and_code(text))


def blocks(text: str) -> list[re.Match]:
    """The generated blocks of a page (outside code fences)."""
    return [match for code, part in _prose_and_code(text) if not code for match in BLOCK.finditer(part)]


def commands(text: str) -> list[str]:
    return [match["command"] for match in blocks(text)]


def _regenerated(root: Path) -> list[tuple[Path, str, str]]:
    """(page, its text, its text regenerated) for every page."""
    return [(page, text, regenerate(text, root)) for page in pages(root) for text in [page.read_text()]]


def stale_pages(root: Path = ROOT) -> list[Path]:
    return [page for page, text, new in _regenerated(root) if new != text]


def write_pages(root: Path = ROOT) -> list[Path]:
    """Regenerate every block; the pages that changed."""
    changed = [(page, new) for page, text, new in _regenerated(root) if new != text]
    for page, new in changed:
        page.write_text(new)
    return [page for page, _new in changed]


# Display names of the modules that register techniques (a module not listed shows under its own name).
FAMILIES = {
    "baseline": "baseline", "half": "half precision", "quantization": "PyTorch dynamic int8",
    "torchao_quant": "torchao",
    "absmax": "hand-written absmax", "bnb": "bitsandbytes", "onnx": "ONNX Runtime", "openvino": "OpenVINO + NNCF",
    "pruning": "L1 pruning", "layerdrop": "layer dropping", "lowrank": "low-rank factorization",
    "distill": "distillation", "lora": "LoRA / QLoRA", "fallback": "float fallback",
}
TASK_SHORT = {"sequence-classification": "classifier", "causal-lm": "language model"}


def _needs(technique) -> str:
    needs = [f"`{module}`" for module in technique.requires]
    if technique.uses_data:
        needs.append("train rows")
    if technique.starts_from_pretrained:
        needs.append("the pretrained encoder")
    needs += [f"runs after `{stage}`" for stage in technique.implies]
    if technique.model_types:
        needs.append("model type " + "/".join(sorted(technique.model_types)))
    return ", ".join(needs) or "-"


def techniques_markdown() -> list[str]:
    """The registry as a Markdown table: one row per registered technique and per parametrised family."""
    from compressors.builders.techniques import DEFAULT_CHAINS, TECHNIQUES

    entries = [(f"`{name}`", TECHNIQUES.get(name)) for name in TECHNIQUES.names()]
    entries += [(f"`{example}` (any name matching `{pattern}`)", technique)
                for pattern, example, technique in TECHNIQUES.families()]
    lines = ["| technique | family | tasks | needs | devices | artifact kind | what it does |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, t in entries:
        module = t.build.__module__.rsplit(".", 1)[-1] if t.build is not None else "baseline"
        tasks = ", ".join(TASK_SHORT.get(task, task) for task in sorted(t.tasks))
        summary = t.summary.replace("|", "\\|")
        lines.append(f"| {label} | {FAMILIES.get(module, module)} | {tasks} | {_needs(t)} | "
                     f"{', '.join(sorted(t.devices))} | {t.artifact_kind or '-'} | {summary} |")
    lines += ["", f"{len(entries)} techniques. Chains of them (`A+B`, each stage cached) run too; the default "
              "matrix benchmarks these: " + ", ".join(f"`{chain}`" for chain in DEFAULT_CHAINS) + "."]
    return lines


def options_markdown() -> list[str]:
    """The suite's options table (bench.plugin.options.OPTIONS) as Markdown: the flag, its key in
    ``[tool.compressbench]`` (where it may live there), its environment variable, its default and what it does."""
    from bench.plugin.options import OPTIONS

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| flag | `[tool.compressbench]` key | environment variable | default | what it does |",
             "| --- | --- | --- | --- | --- |"]
    for group in dict.fromkeys(option.group for option in OPTIONS):
        for option in (o for o in OPTIONS if o.group == group):
            flag = option.flag if option.switch else f"{option.flag} {option.metavar}"
            key = f"`{option.key}`" if option.in_table else "-"
            env = f"`${option.env}`" if option.env else "-"
            if option.default in (None, False):
                default = "off" if option.switch else "-"
            else:
                default = f"`{option.default:g}`" if isinstance(option.default, float) else f"`{option.default}`"
            what = option.help + (f" ({option.range_text})" if option.range_text else "")
            lines.append(f"| `{cell(flag)}` | {key} | {env} | {default} | {cell(what)} |")
    compare = sum(1 for o in OPTIONS if o.group != OPTIONS[0].group)
    lines += ["", f"{len(OPTIONS)} options; the last {compare} are the in-run comparison's (with "
              "`--benchmark-compare`). Precedence, lowest first: the default, the environment variable, "
              "`[tool.compressbench]`, the command line."]
    return lines


def metrics_markdown() -> list[str]:
    """The table of metrics (compressors/records/metric_table.py) as Markdown: what each metric is and where it
    shows, how compare judges it and which budget keys limit it."""
    from compressors.records.metric_table import metrics
    from reports.compare import TEST_NOTES

    lines = ["| metric | unit | better | tasks | results column | HTML column | compare: threshold (default) "
             "| and | budget keys |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in metrics():
        tasks = ", ".join(TASK_SHORT.get(task, task) for task in sorted(m.tasks)) if m.tasks else "all"
        compare = "-"
        if m.compare:
            unit = "pp" if m.compare.absolute else "%"
            moved = "falls" if m.higher_is_better else "rises"
            compare = f"`{m.compare.option}` ({m.compare.default:g}): {moved} by more {unit}"
        html = "-" if m.html is None else (f"bsN {m.html.header}" if m.html.place == "batch" else m.html.header)
        cells = [f"`{m.name}`" + (" (isolated)" if m.isolated else ""), m.unit, "higher" if m.higher_is_better
                 else "lower", tasks, f"`{m.column}`" if m.column else "-", html, compare,
                 TEST_NOTES[m.compare.test] if m.compare else "", ", ".join(f"`{b.key}`" for b in m.budgets) or "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", "(isolated): measured by the isolated measurement process; its name is part of the measurement "
              "version, so stored measurements are taken again when such a metric is added."]
    return lines


def budget_verdicts(rows) -> Callable:
    """``verdict(row)`` for a saved run's rows: the budget recorded with the row, judged again on the row's own
    figures as the test judged them (bench/budgets.py): ``within``, ``declared exception`` (a strict expected
    failure, known_over_budget) or ``over``; ``-`` where the row recorded no budget."""
    from bench.budgets import check_row, judge, saved_budget

    def where(r) -> tuple:
        return r.identity.model, r.identity.tier, r.identity.batch_size, r.identity.scenario

    fp32_peak = {where(r): r.size.peak_memory_bytes for r in rows if r.identity.technique == "fp32"}
    words = {"pass": "within", "xfail": "declared exception", "fail": "over"}

    def verdict(row) -> str:
        if not row.provenance.budget:
            return "-"
        budget = saved_budget(row.identity.technique, row.identity.model, row.provenance.budget)
        verdicts = check_row(budget, row, fp32_peak.get(where(row)))
        return words[judge(row.config_id, budget, verdicts).outcome]

    return verdict
