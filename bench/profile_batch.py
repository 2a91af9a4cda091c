"""Where a ``POST /v1/batch`` (or ``/v1/track``) request spends its time, in-process, under cProfile.

Runs the real WSGI application (production settings, the ``cdp_bench`` database and Redis
db 12, as ``bench/ingest.py`` sets them up) on batches of realistic events, with no HTTP
server in between, and prints the functions with the most cumulative and own time, plus a
split of the wall time into the request's stages. Run ``bench/ingest.py`` once first (it
creates and migrates ``cdp_bench``); this script makes its own source and empties the event
tables when done.

    .venv/bin/python bench/profile_batch.py --size 500 --requests 40
    .venv/bin/python bench/profile_batch.py --track --requests 500
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import base64
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import ingest  # the benchmark's environment and helpers
import payloads


def _environ(path: str, body: bytes, write_key: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode(),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _post(application: Callable[..., Any], path: str, body: bytes, write_key: str) -> bytes:
    status: list[str] = []
    chunks = application(_environ(path, body, write_key), lambda s, headers, exc_info=None: status.append(s))
    data = b"".join(chunks)
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"{status} {data[:300]!r}")
    return data


def stages(write_key: str, bodies: Sequence[bytes]) -> dict[str, float]:
    """Milliseconds per request spent in each stage, timed by calling the stages directly."""
    import orjson
    from django.db import connection
    from django.utils import timezone

    from events.contract import Message, batch_parse, message_parse
    from events.selectors import source_for_write_key
    from events.services import events_ingest

    spent = dict.fromkeys(("json", "source", "parse", "insert+commit"), 0.0)
    for body in bodies:
        began = time.perf_counter()
        data = orjson.loads(body)
        parsed_at = time.perf_counter()
        source = source_for_write_key(write_key)
        found_at = time.perf_counter()
        received_at = timezone.now()
        parsed = batch_parse(data)
        assert isinstance(parsed, tuple), parsed
        raw_messages, defaults = parsed
        messages = [
            message_parse(
                raw,
                received_at=received_at,
                defaults=defaults,
                index=index,
                default_currency=source.default_currency,
            )
            for index, raw in enumerate(raw_messages)
        ]
        assert all(isinstance(m, Message) for m in messages)
        validated_at = time.perf_counter()
        assert source is not None
        events_ingest(source=source, endpoint="batch", received_at=received_at, messages=messages)
        done = time.perf_counter()
        spent["json"] += parsed_at - began
        spent["source"] += found_at - parsed_at
        spent["parse"] += validated_at - found_at
        spent["insert+commit"] += done - validated_at
    connection.close()
    return {key: 1000 * value / len(bodies) for key, value in spent.items()}


def cpu_rounds(
    application: Callable[..., Any], path: str, template: Any, write_key: str, requests: int, rounds: int
) -> None:
    """This process's CPU per request (µs), round by round, and the median of the rounds."""
    figures = []
    for _ in range(rounds):
        bodies = [template.render() for _ in range(requests)]
        cpu_began = time.process_time()
        for body in bodies:
            _post(application, path, body, write_key)
        figures.append(1e6 * (time.process_time() - cpu_began) / requests)
    print(
        f"{rounds} rounds of {requests} requests to {path}: CPU per request (µs) "
        + " ".join(f"{figure:.0f}" for figure in figures)
        + f"; median {statistics.median(figures):.0f}, least {min(figures):.0f} µs (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=500, help="events per batch")
    parser.add_argument("--track", action="store_true", help="profile POST /v1/track (one event) instead")
    parser.add_argument("--requests", type=int, default=40, help="profiled requests")
    parser.add_argument("--top", type=int, default=30, help="functions to list")
    parser.add_argument("--cpu", action="store_true", help="profile CPU time instead of wall time")
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="no profile: only this process's CPU per request, measured in this many rounds of --requests "
        "(each round's figure, their median and the least: the least is the one other work on a shared machine inflates least)",
    )
    args = parser.parse_args(argv)

    source = ingest.prepare(f"profile-{time.time_ns()}")
    # Counted (a Redis round trip, as deployed) but never reached, however many requests are profiled.
    harness.django_setup({**ingest.SERVICE_ENV, "RATE_LIMIT_INGESTION": "100000000/min"})
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    rng = random.Random(4000)
    if args.track:
        path, size, template = "/v1/track", 1, payloads.track_template(rng)
    else:
        path, size, template = "/v1/batch", args.size, payloads.batch_template(rng, args.size)
    try:
        for _ in range(3):  # warm-up: URLconf, connections, caches
            _post(application, path, template.render(), source.write_key)
        if args.rounds:
            cpu_rounds(application, path, template, source.write_key, args.requests, args.rounds)
            return
        bodies = [template.render() for _ in range(args.requests)]
        # CPU time, not wall time: on a shared machine the waits (a commit's flush) say little.
        profiler = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
        began = time.perf_counter()
        profiler.enable()
        for body in bodies:
            _post(application, path, body, source.write_key)
        profiler.disable()
        elapsed = time.perf_counter() - began
        print(
            f"{args.requests} requests to {path} of {size} event(s) under cProfile: "
            f"{1000 * elapsed / args.requests:.2f} ms per request "
            f"({args.requests * size / elapsed:,.0f} events/s on one core, profiler overhead included)"
        )
        for order in ("cumulative", "tottime"):
            print(f"\n--- by {order} ---")
            pstats.Stats(profiler).sort_stats(order).print_stats(args.top)

        bodies = [template.render() for _ in range(args.requests)]
        began, cpu_began = time.perf_counter(), time.process_time()
        for body in bodies:
            _post(application, path, body, source.write_key)
        plain = (time.perf_counter() - began) / args.requests
        cpu = (time.process_time() - cpu_began) / args.requests
        print(
            f"Without the profiler: {1000 * plain:.2f} ms per request ({size / plain:,.0f} events/s), "
            f"{1000 * cpu:.2f} ms of this process's CPU per request (the rest: waiting on PostgreSQL and Redis)"
        )
        if args.track:
            return
        split = stages(source.write_key, [template.render() for _ in range(args.requests)])
        print("Stages, called directly (ms per request):", {k: round(v, 2) for k, v in split.items()})
    finally:
        ingest.events_reset()
        ingest.broker_flush()


if __name__ == "__main__":
    main()
