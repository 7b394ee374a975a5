"""Run a fake model server from the shell: ``python -m actorchat.testing openai``.

For trying a configuration by hand, and for benches that want the server
in a process of its own (so that it does not share a core with the client
it serves).
"""

from __future__ import annotations

from actorchat._gevent import patch

patch()

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from actorchat.testing._fake import SERVERS, Behavior  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m actorchat.testing", description=__doc__)
    parser.add_argument("kind", choices=sorted(SERVERS), help="which API to speak")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per reply")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="between tokens")
    parser.add_argument("--ttfb-ms", type=float, default=0.0, help="before the status line")
    parser.add_argument("--no-usage", action="store_true", help="send no token usage")
    parser.add_argument("--api-key", default=None, help="require this key")
    parser.add_argument(
        "--interrupts",
        action="store_true",
        help="a new request cuts short those in progress, as llama.cpp's server does",
    )
    parser.add_argument(
        "--stamp", action="store_true", help="tokens carry their send time (for benches)"
    )
    args = parser.parse_args(argv)
    behavior = Behavior(
        tokens=args.tokens,
        delay=args.delay_ms / 1000.0,
        first_token_delay=args.delay_ms / 1000.0,
        ttfb=args.ttfb_ms / 1000.0,
        usage=not args.no_usage,
        stamp=args.stamp,
    )
    server = SERVERS[args.kind](
        behavior,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        interrupts=args.interrupts,
    )
    server.start()
    print(f"fake {args.kind} server listening: base_url={server.base_url}", flush=True)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
