"""CPU the instrumentation adds on its hot paths, in microseconds (``time.process_time``).

    python -m benchmarks.bench_hotpath [--rounds 7] [--tasks 20000] [--requests 200] [--parts tasks,requests]

- ``tasks``: create and gather ``--tasks`` no-op tasks with a cascade set in the
  context, on a loop with our task factory (the instrumentation installed) and on
  a loop without it; once more with an ActiveTask owner set as well (the SDK's
  plumbing tasks). Prints CPU per task for each side and the difference, with the
  garbage collector off (our code's own CPU; steadier) and on (plus the collector
  passes that our allocations bring forward), and the function calls per task
  (a count: steady on the shared machine).
- ``tracker``: one ``acquire`` and ``release`` of a cascade already held (what
  every spawned task costs the tracker), with and without an owner.
- ``requests``: the bench_instrumentation A -> B -> C relay whose agents do
  nothing, in this process, uninstrumented and instrumented (``report=False``),
  rounds interleaved; CPU of the whole process per hop per request.
- ``calls``: the same relay, one round each side under cProfile: function calls
  per hop per request (a count, so steady on a shared machine; not CPU).

Every figure is the best of ``--rounds`` (the least disturbed by the shared
machine); the load average is printed with it.
"""

from __future__ import annotations

import argparse
import os
import sys

# a2a-sdk decides at import whether it traces itself: off, as bench_instrumentation
os.environ.setdefault("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false")

import asyncio  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Callable  # noqa: E402

HOPS = 3


async def _noop() -> None:
    return None


def _tasks_once(n: int, hooked: bool, with_owner: bool, collect: bool) -> float:
    """CPU seconds to create and gather ``n`` no-op tasks under a cascade (``collect``:
    the garbage collector runs meanwhile, as it does in an agent)."""
    from a2a_quiescence.instrumentation import runtime as rtm
    from a2a_quiescence.instrumentation.loop import ensure_loop_hooks, remove_loop_hooks

    async def body() -> float:
        rt = rtm.current()
        if hooked:
            ensure_loop_hooks(rt)
        trace_id = uuid.uuid4().hex
        hold = rt.tracker.start_root(trace_id)  # the cascade is held, as in a request
        rtm.CASCADE.set(trace_id)
        if with_owner:
            rtm.OWNER.set(rtm.ActiveTaskState(task_id=uuid.uuid4().hex, cascade=trace_id))
        loop = asyncio.get_running_loop()
        gc.collect()
        if not collect:
            gc.disable()
        try:
            start = time.process_time()
            await asyncio.gather(*[loop.create_task(_noop()) for _ in range(n)])
            spent = time.process_time() - start
        finally:
            gc.enable()
        rt.tracker.release(hold)
        if hooked:
            remove_loop_hooks(rt)
        return spent

    return asyncio.run(body())


def _tracker_once(n: int, with_owner: bool) -> float:
    from a2a_quiescence.instrumentation.runtime import current

    tracker = current().tracker
    trace_id = uuid.uuid4().hex
    hold = tracker.start_root(trace_id)
    owner = uuid.uuid4().hex if with_owner else None
    acquire, release = tracker.acquire, tracker.release
    start = time.process_time()
    for _ in range(n):
        release(acquire(trace_id, owner, "x"))
    spent = time.process_time() - start
    tracker.release(hold)
    return spent


def _best(rounds: int, once: Callable[[], float]) -> float:
    return min(once() for _ in range(rounds))


def _instrument() -> Callable[[], None]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor

    provider = TracerProvider()
    inst = A2AQuiescenceInstrumentor()
    inst.instrument(tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
                    report=False)

    def undo() -> None:
        inst.uninstrument()
        provider.shutdown()

    return undo


def part_tasks(args: argparse.Namespace) -> None:
    undo = _instrument()
    try:
        n = args.tasks
        for collect, with_owner in ((False, False), (False, True), (True, False), (True, True)):
            bare = _best(args.rounds, lambda: _tasks_once(n, False, with_owner, collect)) / n * 1e6
            ours = _best(args.rounds, lambda: _tasks_once(n, True, with_owner, collect)) / n * 1e6
            what = ("cascade + owner" if with_owner else "cascade") + (", gc on" if collect else ", gc off")
            print(f"tasks ({what:23s}): bare {bare:6.2f} us/task, ours {ours:6.2f} us/task, "
                  f"added {ours - bare:5.2f} us/task", flush=True)
        for with_owner in (False, True):
            calls = {hooked: _calls_of(lambda: _tasks_once(n, hooked, with_owner, False)) / n for hooked in (False, True)}
            what = "cascade + owner" if with_owner else "cascade"
            print(f"tasks ({what:23s}): calls per task bare {calls[False]:5.2f}, ours {calls[True]:5.2f}, "
                  f"added {calls[True] - calls[False]:5.2f}", flush=True)
    finally:
        undo()


def _calls_of(run: Callable[[], object]) -> int:
    """Function calls (Python and builtin) made by ``run``, as cProfile counts them."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    return sum(v[1] for v in pstats.Stats(profile).stats.values())  # type: ignore[attr-defined]


def part_tracker(args: argparse.Namespace) -> None:
    undo = _instrument()
    try:
        n = args.tasks
        for with_owner in (False, True):
            spent = _best(args.rounds, lambda: _tracker_once(n, with_owner)) / n * 1e6
            print(f"tracker acquire+release ({'owner' if with_owner else 'no owner'}): {spent:5.2f} us", flush=True)
    finally:
        undo()


def _request_round(instrumented: bool, requests: int, concurrency: int) -> float:
    """CPU seconds of this process per hop per request for one round."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from a2a_quiescence.instrumentation import A2AQuiescenceInstrumentor
    from benchmarks.bench_instrumentation import CountingExporter, drive, relay_servers

    inst = provider = None
    if instrumented:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(CountingExporter(), max_queue_size=65536))
        inst = A2AQuiescenceInstrumentor()
        inst.instrument(tracer_provider=provider,
                        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]), report=False)

    async def run() -> float:
        async with relay_servers() as url:
            await drive(url, 10, concurrency, warmup=0)
            start = time.process_time()
            await drive(url, requests, concurrency, warmup=0)
            return time.process_time() - start

    try:
        spent = asyncio.run(run())
    finally:
        if inst is not None:
            inst.uninstrument()
        if provider is not None:
            provider.shutdown()
    return spent / (HOPS * requests)


def part_requests(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.WARNING)
    results: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for instrumented in ((False, True) if r % 2 == 0 else (True, False)):
            results[instrumented].append(_request_round(instrumented, args.requests, args.concurrency) * 1e6)
    bare, ours = min(results[False]), min(results[True])
    print(f"requests: bare {bare:7.1f} us/hop/req, ours {ours:7.1f} us/hop/req, added {ours - bare:6.1f} "
          f"(best of {args.rounds}; medians {sorted(results[False])[args.rounds // 2]:.1f} / "
          f"{sorted(results[True])[args.rounds // 2]:.1f})", flush=True)


def part_calls(args: argparse.Namespace) -> None:
    """Function calls (Python and builtin, as cProfile counts them) per hop per request,
    uninstrumented and instrumented: not CPU, but steady where the shared machine is not."""
    import cProfile
    import logging
    import pstats

    logging.disable(logging.WARNING)
    counts = {}
    for instrumented in (False, True):
        _request_round(instrumented, 10, args.concurrency)  # warm up (imports, caches)
        profile = cProfile.Profile()
        profile.enable()
        _request_round(instrumented, args.requests, args.concurrency)
        profile.disable()
        stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        total = sum(v[1] for v in stats.values())
        ours = sum(v[1] for k, v in stats.items() if os.sep + "instrumentation" + os.sep in k[0] and "site-packages" not in k[0])
        counts[instrumented] = (total / (HOPS * args.requests), ours / (HOPS * args.requests))
    (bare, _), (total, ours) = counts[False], counts[True]
    print(f"calls: bare {bare:7.0f} per hop per request, ours {total:7.0f} (added {total - bare:6.0f}; "
          f"in our instrumentation's own functions {ours:5.0f})", flush=True)


PARTS: dict[str, Callable[[argparse.Namespace], None]] = {
    "tasks": part_tasks, "tracker": part_tracker, "requests": part_requests, "calls": part_calls,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--parts", default="tasks,tracker,requests,calls")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (python {sys.version.split()[0]})")
    for name in args.parts.split(","):
        PARTS[name](args)


if __name__ == "__main__":
    main()

