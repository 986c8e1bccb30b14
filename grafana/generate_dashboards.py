#!/usr/bin/env python3
"""Generate the otel-flask-metrics Grafana dashboards (``grafana/dashboards/*.json``).

The JSON files Grafana provisions are build output: the ``ofm_dashboards``
package next to this script is the one source of truth (its docstring lists
the conventions every panel follows), and a test checks that the committed
files equal what it writes. Run it after every change::

    python grafana/generate_dashboards.py          # rewrite the JSON files
    python grafana/generate_dashboards.py --check  # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARD_DIR = HERE / "dashboards"

# The package sits next to this script; put it on the path also when the
# script is loaded by file name (as tests/grafana does), not only when run.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ofm_dashboards import dashboards, render  # noqa: E402

__all__ = ["DASHBOARD_DIR", "dashboards", "main", "render"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, model in dashboards().items():
        path = args.out / name
        text = render(model)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale dashboards (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
