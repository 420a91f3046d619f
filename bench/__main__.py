"""mlbridge against its peers, in one run: ``python -m bench`` (or ``make bench``).

    .venv/bin/python -m bench            # the full run (~11 minutes on 2 cores)
    .venv/bin/python -m bench --quick    # fewer requests, shorter runs (~3 minutes)
    .venv/bin/python -m bench --report bench/results/latest.json   # tables and plots only

Writes the results (``bench/results/latest.json``, or ``--out``), the tables
(``bench/results/latest.md``) and the plots (``docs/img/bench-*.png``), and the
profile of mlbridge's request path (``bench/results/profile-*.txt``) unless
``--no-profile``. See bench/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import report
from .run import PLANS, run

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~3 minutes)")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/latest.json)")
    parser.add_argument(
        "--no-pin", action="store_true", help="let client and servers share every CPU"
    )
    parser.add_argument("--no-locust", action="store_true", help="skip the Locust scenario")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--report", type=Path, help="only write tables and plots from a results file"
    )
    args = parser.parse_args()
    if args.report:
        results = json.loads(args.report.read_text())
    else:
        plan = PLANS["quick" if args.quick else "full"]
        default = RESULTS / ("quick.json" if args.quick else "latest.json")
        out = args.out or default
        results = run(plan, out, pin=not args.no_pin, with_locust=not args.no_locust)
        if not args.no_profile:
            from . import profile

            profile.main(quick=args.quick, pin=not args.no_pin)
    markdown = report.write(results, RESULTS, plots=not args.quick or args.report is not None)
    print(markdown)


if __name__ == "__main__":
    main()
