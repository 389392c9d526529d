"""``python -m reports table [RUN] [--storage DIR]``: the results table of a saved run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compressors import CompressbenchError
from reports.runs import DEFAULT_STORAGE, LEGEND, find_run, format_table, rows_from_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports")
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="print the results table of a saved run (default: the latest)")
    table.add_argument("run", nargs="?", help="run number (0001), save name (run1) or JSON path")
    table.add_argument("--storage", type=Path, default=DEFAULT_STORAGE)
    args = parser.parse_args(argv)
    try:
        path = find_run(args.run, args.storage)
        rows = rows_from_run(path)
    except (CompressbenchError, ValueError, OSError) as exc:
        print(f"reports: {exc}", file=sys.stderr)
        return 2
    print(f"{path}")
    for line in format_table(rows):
        print(line)
    print(LEGEND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
