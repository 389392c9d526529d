"""The reports command line.

``python -m reports table [RUN] [--markdown] [--model NAME]``: the results table of a saved run.
``python -m reports techniques --markdown``: the registered techniques as a table.
``python -m reports metrics --markdown``: the table of metrics (compressors/records/metric_table.py).
``python -m reports docs [--check]``: regenerate the generated tables of README.md and docs/ (reports/docs.py).
``python -m reports build [RUN ...]``: HTML page + Markdown summary (default: the latest run of each machine).
``python -m reports screenshot [RUN ...] --out PNG``: a PNG of that page in headless chromium (reports/screenshot.py).
``python -m reports search [RUN]``: what the accuracy-aware search (pytest bench --search) of a run tried and chose,
its frontier, and whether its held-apart verdicts held on the evaluation rows (reports/search.py).
``python -m reports compare A B [--confirm C [--confirm-baseline A2]]``: every metric side by side; exit 1
when a configuration regressed (a latency regression, with C, only when C's re-timing is flagged too).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from compressors import CompressbenchError
from compressors.records.tables import format_markdown_table, format_table, markdown_legend, terminal_legend
from reports.runs import DEFAULT_STORAGE, SkippedRunWarning, find_run, find_runs, load_run, rows_from_run

RUN_HELP = "run number (0001), save name (run1) or JSON path"


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: need three comma-separated numbers wA,wCR,wIS") from None


def _parser() -> argparse.ArgumentParser:
    from reports.compare import add_threshold_options
    from reports.html import BuildOptions

    parser = argparse.ArgumentParser(prog="python -m reports")
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="print the results table of a saved run (default: the latest)")
    table.add_argument("run", nargs="?", help=RUN_HELP)
    table.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)
    table.add_argument("--markdown", action="store_true",
                       help="a Markdown table headed by the machine it was measured on (what README.md and docs/ "
                            "publish)")
    table.add_argument("--model", action="append", default=None, metavar="NAME",
                       help="only this model's rows (repeatable)")

    search = sub.add_parser("search", help="what the accuracy-aware search of a run (pytest bench --search) tried "
                                           "and chose: frontier, trials, choices, held-apart vs evaluation drops")
    search.add_argument("run", nargs="?", help=RUN_HELP + "; default: the latest")
    search.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)

    techniques = sub.add_parser("techniques", help="the registered techniques as a table")
    techniques.add_argument("--markdown", action="store_true", required=True, help="as Markdown (the only format)")

    options = sub.add_parser("options", help="the suite's options (flags, settings-table keys, variables) as a table")
    options.add_argument("--markdown", action="store_true", required=True, help="as Markdown (the only format)")

    metrics = sub.add_parser("metrics", help="the table of metrics: columns, compare thresholds, budget keys")
    metrics.add_argument("--markdown", action="store_true", required=True, help="as Markdown (the only format)")

    docs = sub.add_parser("docs", help="regenerate every generated table in README.md and docs/ from its command")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is stale")

    build = sub.add_parser("build", help="HTML report + Markdown summary of saved runs")
    build.add_argument("runs", nargs="*", metavar="RUN", help=RUN_HELP + "; default: the latest of each machine")
    build.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)
    build.add_argument("--out", type=Path, default=None,
                       help="output folder (default: reports/out/<run names>/)")
    build.add_argument("--force", action="store_true", help="overwrite a report already in --out")
    defaults = BuildOptions()
    build.add_argument("--weights", type=_weights, default=defaults.weights, metavar="wA,wCR,wIS",
                       help="weighted-score weights: accuracy, compression ratio, inference speedup "
                            f"(default {','.join(f'{w:g}' for w in defaults.weights)})")
    build.add_argument("--max-drop", type=float, default=defaults.max_drop,
                       help=f"accuracy-drop limit (pp) of the recommendation (default {defaults.max_drop:g})")
    build.add_argument("--score-batch", type=int, default=defaults.score_batch,
                       help=f"batch size of the latency in score, Pareto, radar, recommendation "
                            f"(default {defaults.score_batch})")

    shot = sub.add_parser("screenshot", help="a PNG of the HTML report of saved runs, taken in headless chromium "
                                             "(fails when a chart draws nothing or the page logs an error)")
    shot.add_argument("runs", nargs="*", metavar="RUN", help=RUN_HELP + "; default: the latest of each machine")
    shot.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)
    shot.add_argument("--out", type=Path, required=True, help="the PNG to write (e.g. docs/img/report.png)")
    shot.add_argument("--width", type=int, default=1280, help="page width in CSS pixels (default 1280)")
    shot.add_argument("--height", type=int, default=None,
                      help="keep this many CSS pixels from the top of the page (default: the whole page)")

    compare = sub.add_parser("compare", help="every metric of two runs side by side; exit 1 on a regression")
    compare.add_argument("before", metavar="A", help=RUN_HELP)
    compare.add_argument("after", metavar="B", help=RUN_HELP)
    compare.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)
    compare.add_argument("--allow-partial", action="store_true",
                         help="compare with an interrupted (partial) run, on the configurations it has")
    compare.add_argument("--confirm", metavar="C", default=None,
                         help="a later run that re-timed the configurations flagged slower (pytest bench -k ...): "
                              "a latency regression then stands only if C is flagged against A as well")
    compare.add_argument("--confirm-baseline", metavar="A2", default=None,
                         help="a re-timing of A's code for the same configurations: with --confirm, a latency "
                              "regression also needs C flagged against A2 (clears a rare fast run of A)")
    compare.add_argument("--write-retime", metavar="FILE", type=Path, default=None,
                         help="write the pytest -k expression of the configurations flagged slower to FILE "
                              "(empty when none), for a job that re-times them and confirms")
    add_threshold_options(compare.add_argument)
    return parser


def _table(args) -> int:
    path = find_run(args.run, args.storage)
    rows = rows_from_run(path)
    run = load_run(path)
    if args.model:
        known = sorted({row.identity.model for row in rows})
        unknown = [name for name in args.model if name not in known]
        if unknown:
            raise CompressbenchError(f"--model {', '.join(unknown)}: not in {path}; its models: {', '.join(known)}")
        rows = [row for row in rows if row.identity.model in args.model]
    partial = run.partial
    if args.markdown:
        print(f"Run `{run.label}` ({path}){f' [PARTIAL RUN: {partial}]' if partial else ''}, measured on "
              f"{run.machine_caption()}.\n")
        from reports.docs import budget_verdicts

        for line in format_markdown_table(rows, budget_verdicts(rows)):
            print(line)
        print(f"\n{markdown_legend(rows)}")
        return 0
    print(f"{path}" + (f"  [PARTIAL RUN: {partial}]" if partial else ""))
    for line in format_table(rows):
        print(line)
    print(terminal_legend())
    if run.time_spent:  # runs saved since they record where their time went
        from compressors.machine.timing import format_breakdown

        print(format_breakdown(run.time_spent))
    return 0


def _search(args) -> int:
    from reports.search import format_search

    for line in format_search(load_run(find_run(args.run, args.storage))):
        print(line)
    return 0


def _techniques(args) -> int:
    from reports.docs import techniques_markdown

    for line in techniques_markdown():
        print(line)
    return 0


def _options(args) -> int:
    from reports.docs import options_markdown

    for line in options_markdown():
        print(line)
    return 0


def _metrics(args) -> int:
    from reports.docs import metrics_markdown

    for line in metrics_markdown():
        print(line)
    return 0


def _docs(args) -> int:
    from reports.docs import stale_pages, write_pages

    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f"stale: {page} (run: python -m reports docs)")
        return 1 if stale else 0
    for page in write_pages():
        print(f"regenerated {page}")
    return 0


def _build(args) -> int:
    from reports.html import BuildOptions, default_out, write_report
    from reports.runs import load_runs

    options = BuildOptions(weights=args.weights, max_drop=args.max_drop, score_batch=args.score_batch)
    runs = load_runs(find_runs(args.runs, args.storage))
    page, summary = write_report(runs, args.out or default_out(runs), options, force=args.force,
                                 storage=args.storage)
    print(f"runs: {', '.join(str(r.path) for r in runs)}")
    print(f"Markdown summary: {summary}")
    print(f"HTML report: {page}")
    return 0


def _screenshot(args) -> int:
    import tempfile

    from reports.html import BuildOptions, write_report
    from reports.runs import load_runs
    from reports.screenshot import render

    runs = load_runs(find_runs(args.runs, args.storage))
    with tempfile.TemporaryDirectory(prefix="compressbench-report-") as folder:
        page, _ = write_report(runs, Path(folder), BuildOptions())
        rendered = render(page, args.out, width=args.width, height=args.height)
    if rendered.errors or rendered.blank_charts:
        args.out.unlink(missing_ok=True)  # never leave a picture of a broken page to be published
        raise CompressbenchError(f"the report did not render cleanly: errors {rendered.errors}, "
                                 f"charts that drew nothing {[c['id'] for c in rendered.blank_charts]}")
    print(f"runs: {', '.join(str(r.path) for r in runs)}")
    print(f"screenshot: {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


def _compare(args) -> int:
    from reports.compare import compare_runs, format_comparison, retime_selection, thresholds_from_options
    from reports.runs import load_run

    thresholds = thresholds_from_options(lambda field: getattr(args, f"compare_{field}"))
    before = load_run(find_run(args.before, args.storage))
    after = load_run(find_run(args.after, args.storage))
    confirm = load_run(find_run(args.confirm, args.storage)) if args.confirm else None
    baseline = load_run(find_run(args.confirm_baseline, args.storage)) if args.confirm_baseline else None
    comparison = compare_runs(before, after, thresholds, allow_partial=args.allow_partial, confirm=confirm,
                              confirm_baseline=baseline)
    if comparison.machine_warning:
        print(f"reports: warning: {comparison.machine_warning}", file=sys.stderr)
    print(f"A = {before.path}\nB = {after.path}" + (f"\nC = {confirm.path} (re-timing of B's code)" if confirm else "")
          + (f"\nA2 = {baseline.path} (re-timing of A's code)" if baseline else ""))
    for line in format_comparison(comparison):
        print(line)
    if args.write_retime is not None:
        args.write_retime.write_text(retime_selection(comparison))
    return 1 if comparison.regressions else 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    command = {"table": _table, "search": _search, "techniques": _techniques, "options": _options,
               "metrics": _metrics, "docs": _docs, "build": _build, "screenshot": _screenshot,
               "compare": _compare}[args.command]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedRunWarning)
        try:
            code = command(args)
        except (CompressbenchError, ValueError, OSError) as exc:
            code, error = 2, exc
        else:
            error = None
    for warning in caught:
        if issubclass(warning.category, SkippedRunWarning):
            print(f"reports: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    if error is not None:
        print(f"reports: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
