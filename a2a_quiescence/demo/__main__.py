"""The demo: a live A -> B -> C mesh with the sidecar, Prometheus, Alertmanager and alerts.

    python -m a2a_quiescence.demo [--short] [--cascades N] [--keep-running] [--summary-json FILE]

Runs a live A -> B -> C mesh with the sidecar, Prometheus, Alertmanager and alerts.
What it starts, all on 127.0.0.1 and all stopped at the end (or on Ctrl-C):
the collector (`a2a-quiescence collector`), Prometheus with the project's rules
scraping it, Alertmanager sending every alert to a receiver in this process
(each delivery is printed), a push webhook, and agents A, B and C, each under
`opentelemetry-instrument` the way users start them.

What it does: clean cascades A -> B -> C, each waited on with the settlement
API; a non-blocking delegation whose pushes outlive A's answer; a multi-turn
task C parks waiting for its user's input (awaiting_input, never stuck) and
completes once answered; the a2a-sdk #1101 hang (a stream subscriber that
stops reading, so C's producer parks in `EventQueue.close(immediate=False)`:
reported while it hangs, with its alert); then C shuts down without draining
while it still works on a long job, so that producer is leaked, the sidecar
keeps the record after C is gone, and the leak alert fires. C starts again,
draining at shutdown this time, and A, B and C all shut down cleanly with
aclose() while C works on another long job: nothing leaks, but the cascade
settles with its outcome `lost` (C's work cancelled by the drain) and its
alerts fire. A summary table ends it, with every cascade's outcome.
Prometheus and Alertmanager are optional: without them the demo says so and
shows everything the collector knows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from a2a_quiescence.demo.report import print_summary
from a2a_quiescence.demo.scenario import Demo
from a2a_quiescence.demo.timing import DemoError
# the demo's timings, importable from here as before the demo had modules of its own
from a2a_quiescence.demo.timing import DEADLINE, STALL_SECONDS, STUCK_AFTER  # noqa: F401


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # stop everything the same way as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m a2a_quiescence.demo",
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything listens on 127.0.0.1; everything started is stopped at the end or on Ctrl-C.",
    )
    parser.add_argument("--cascades", type=int, default=5, help="clean cascades to send (default %(default)s)")
    parser.add_argument("--work-ms", type=int, default=150, help="how long C works per clean cascade (default %(default)s)")
    parser.add_argument("--short", action="store_true", help="a quicker run (2 clean cascades, little work): for CI")
    parser.add_argument("--keep-running", action="store_true",
                        help="after the summary, keep the collector, Prometheus and Alertmanager up until Ctrl-C")
    parser.add_argument("--summary-json", type=Path, metavar="FILE", help="also write the summary to FILE as JSON")
    args = parser.parse_args(argv)
    if args.cascades < 1 or args.work_ms < 0:
        parser.error("--cascades must be at least 1 and --work-ms not negative")
    if args.short:
        args.cascades, args.work_ms = min(args.cascades, 2), min(args.work_ms, 50)

    signal.signal(signal.SIGTERM, _sigterm)
    demo = Demo(args, Path(tempfile.mkdtemp(prefix="a2a-quiescence-demo-")))
    code = 0
    try:
        demo.start()
        asyncio.run(demo.run())
        demo.collect_hops()
        demo.summary.completed = True
        print_summary(demo.summary)
        demo.print_next(running=args.keep_running)
        if args.keep_running:
            print("\nmesh data kept up; Ctrl-C to stop", flush=True)
            _wait_forever()
    except KeyboardInterrupt:
        print("\nstopping everything", flush=True)
        code = 0 if demo.summary.completed else 130
    except DemoError as exc:
        demo.summary.error = str(exc)
        print(f"demo failed: {exc} (logs in {demo.workdir})", file=sys.stderr)
        code = 1
    finally:
        demo.summary.pids = demo.pids()  # every process it started, for whoever checks that none is left
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        demo.stop()
        if args.summary_json:
            args.summary_json.write_text(json.dumps(asdict(demo.summary), indent=1))
    return code


def _wait_forever() -> None:
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
