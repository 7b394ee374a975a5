"""The ``actorchat`` command line.

The console script's first act is monkey-patching (``actorchat.patch``),
before anything opens a socket or starts an actor.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def _config_flags(parser: argparse.ArgumentParser) -> None:
    from actorchat.stores import store_kinds  # after monkey-patching, like every import here

    g = parser.add_argument_group("configuration (overrides file and ACTORCHAT_* environment)")
    g.add_argument("--config", help="TOML config file (default: $ACTORCHAT_CONFIG)")
    g.add_argument("--data-dir", help="where the SQLite store lives")
    g.add_argument("--store", choices=store_kinds())
    g.add_argument(
        "--model",
        dest="default_model",
        help="default model name (chat --url: the model of a new conversation)",
    )
    g.add_argument("--mock-tokens", type=int, help="embedded model: tokens per reply")
    g.add_argument("--mock-delay-ms", type=float, help="embedded model: ms before each token")
    g.add_argument("--idle-timeout", type=float, help="seconds before an idle actor is stopped")
    g.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")


def _load(args: argparse.Namespace, **extra: Any) -> Any:
    from actorchat.config import load_config

    keys = (
        "data_dir",
        "store",
        "default_model",
        "mock_tokens",
        "mock_delay_ms",
        "idle_timeout",
        "log_level",
    )
    overrides = {k: getattr(args, k, None) for k in keys}
    overrides.update(extra)
    return load_config(args.config, **overrides)


def _cmd_version(_args: argparse.Namespace) -> int:
    from actorchat import __version__

    print(f"actorchat {__version__}")
    return 0


#: Flags of the embedded system, which a server reached with ``--url`` has its own of.
_EMBEDDED_ONLY = (
    ("config", "--config"),
    ("data_dir", "--data-dir"),
    ("store", "--store"),
    ("mock_tokens", "--mock-tokens"),
    ("mock_delay_ms", "--mock-delay-ms"),
    ("idle_timeout", "--idle-timeout"),
)


def _cmd_chat(args: argparse.Namespace) -> int:
    if args.url is not None:
        return _chat_remote(args)
    for flag, given in (("--token", args.token), ("--user", args.user)):
        if given is not None:
            args.parser.error(f"{flag} applies only with --url (a server's auth)")
    from actorchat import ChatSystem, ErrorEvent, StreamComplete, StreamContent

    cfg = _load(args)
    text = sys.stdin.read() if args.message == ["-"] else " ".join(args.message)
    with ChatSystem(cfg) as chat:
        cid = args.conversation or chat.start_conversation(model=args.model_name)
        reason = "stop"
        for event in chat.stream_message(cid, text, timeout=args.timeout):
            if isinstance(event, StreamContent):
                sys.stdout.write(event.content)
                sys.stdout.flush()
            elif isinstance(event, ErrorEvent):
                print(f"\nactorchat: {event.code}: {event.message}", file=sys.stderr)
            elif isinstance(event, StreamComplete):
                reason = event.finish_reason
        sys.stdout.write("\n")
        if args.verbose:
            print(f"[conversation {cid}, finish_reason={reason}]", file=sys.stderr)
    return 0 if reason in ("stop", "length") else 1


def _chat_remote(args: argparse.Namespace) -> int:
    """``chat --url``: the same command through a running server's HTTP API.

    The embedded system's own settings are refused rather than ignored: a
    user passing ``--data-dir`` beside ``--url`` expects it to matter.
    """
    for dest, flag in _EMBEDDED_ONLY:
        if getattr(args, dest, None) is not None:
            args.parser.error(
                f"{flag} sets up the embedded system; the server at --url has its own"
            )
    model = args.model_name or args.default_model
    if model is not None and args.conversation is not None:
        args.parser.error(
            "--model and --model-name choose the model of a new conversation; "
            "an existing one keeps its own"
        )
    from actorchat._remote import RemoteError, chat

    text = sys.stdin.read() if args.message == ["-"] else " ".join(args.message)
    try:
        return chat(
            args.url,
            text,
            conversation=args.conversation,
            model=model,
            token=args.token,
            user=args.user,
            timeout=args.timeout,
            verbose=args.verbose,
            out=sys.stdout,
            err=sys.stderr,
        )
    except RemoteError as exc:
        print(f"actorchat: {exc}", file=sys.stderr)
        return 1


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from actorchat.server import serve
    except ImportError:
        print("actorchat serve: the server is not part of this build yet", file=sys.stderr)
        return 2
    server_flags = (
        "host",
        "port",
        "allowed_origins",
        "max_connections",
        "ping_interval",
        "shutdown_grace",
        "log_format",
    )
    cfg = _load(args, **{k: getattr(args, k) for k in server_flags})
    return int(serve(cfg) or 0)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actorchat.errors import ConfigurationError

    if not args.source.startswith("sqlite:"):
        args.parser.error("--from takes sqlite:PATH (a data directory or its .sqlite3 file)")
    if not args.to.startswith(("postgresql://", "postgres://")):
        args.parser.error("--to takes a postgresql:// URL")
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            msg = f"cannot read --password-file {args.password_file}: {exc.strerror}"
            raise ConfigurationError(msg) from None
    try:
        from actorchat.stores._migrate import migrate_sqlite_to_postgres
    except ImportError as exc:
        msg = f"migrate needs psycopg 3: pip install 'actorchat[postgres]' ({exc})"
        raise ConfigurationError(msg) from None
    shown = {"last": ""}

    def progress(what: str, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        line = f"\r  {what}: {done:,} / {total:,} ({pct}%)"
        if line != shown["last"]:
            ended = done >= total
            sys.stderr.write(line + ("\n" if ended else ""))
            sys.stderr.flush()
            shown["last"] = line
            shown["ended"] = "yes" if ended else ""

    source = Path(args.source.removeprefix("sqlite:")).expanduser()
    notes: list[str] = []
    try:
        convs, msgs = migrate_sqlite_to_postgres(
            source, args.to, password=password, progress=progress, notes=notes
        )
    finally:
        if shown["last"] and not shown.get("ended"):
            sys.stderr.write("\n")  # an error's line must not run on from the progress line
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"verified: {convs:,} conversations and {msgs:,} messages at the destination")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from actorchat._version import __version__

    parser = argparse.ArgumentParser(
        prog="actorchat", description="Massively concurrent AI chat on the actor model."
    )
    parser.add_argument("--version", action="version", version=f"actorchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version, parser=p)

    p = sub.add_parser(
        "chat",
        help="send one message and print the streamed reply",
        description=(
            "Send one message and print the reply as it streams. Without --url the "
            "command runs its own system on the local data directory; with --url it "
            "talks to a running server through its HTTP API instead (such as the "
            "`actorchat serve` that owns that directory)."
        ),
    )
    p.add_argument("message", nargs="+", help="the message text ('-': read it from stdin)")
    p.add_argument("--conversation", help="continue this conversation id")
    p.add_argument("--model-name", dest="model_name", help="model for a new conversation")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per event")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="also print the conversation id (stderr)"
    )
    g = p.add_argument_group("a running server (instead of an embedded system)")
    g.add_argument(
        "--url",
        help="the server's base URL, e.g. http://127.0.0.1:8000; the conversation id "
        "of a new conversation is printed to stderr",
    )
    g.add_argument(
        "--token",
        help="bearer token for --url (default: $ACTORCHAT_TOKEN, which other users "
        "cannot read in the process list; without either, a dev token is fetched "
        "when the server offers dev auth)",
    )
    g.add_argument(
        "--user", metavar="NAME", help="user a dev token is fetched for (default: your login name)"
    )
    _config_flags(p)
    p.set_defaults(func=_cmd_chat, parser=p)

    p = sub.add_parser("serve", help="run the WebSocket and HTTP server")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument(
        "--allowed-origins",
        help="comma-separated browser origins allowed to connect ('*': any; default: same origin)",
    )
    p.add_argument("--max-connections", type=int, help="WebSocket connections at most")
    p.add_argument("--ping-interval", type=float, help="seconds between WebSocket pings (0: off)")
    p.add_argument("--shutdown-grace", type=float, help="seconds replies get to finish on SIGTERM")
    p.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON")
    _config_flags(p)
    p.set_defaults(func=_cmd_serve, parser=p)

    p = sub.add_parser(
        "migrate",
        help="copy an SQLite store into PostgreSQL",
        description=(
            "Copy every conversation and message (earlier versions included) from an "
            "SQLite store into PostgreSQL, then check that each is there. Stop the "
            "server first (the file is locked while one runs). Safe to run again: an "
            "interrupted copy resumes, rows already copied are skipped. The password "
            "comes from the URL, --password-file or PGPASSWORD."
        ),
    )
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH")
    p.add_argument("--to", required=True, metavar="postgresql://USER@HOST/DB")
    p.add_argument("--password-file", help="a file holding the database password")
    p.set_defaults(func=_cmd_migrate, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from actorchat._gevent import patch

    patch()
    import logging

    import gevent

    # Ctrl-C is how a user stops a reply: the hub would print it as an error of
    # its loop (with a timestamp) before raising it here, where it means exit 130.
    hub = gevent.get_hub()
    hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)

    from actorchat.errors import ActorchatError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    unknown = f"unrecognized arguments: {' '.join(extra)}"
    if args.command is None:
        if extra:
            parser.error(unknown)
        parser.print_help(sys.stderr)
        return 2
    if extra:  # blamed on the parser they were given to, with its usage
        given_to_command = not set(extra) & set(argv[: argv.index(args.command)])
        (args.parser if given_to_command else parser).error(unknown)
    logging.basicConfig(
        level=(getattr(args, "log_level", None) or "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
        return result
    except ActorchatError as exc:
        print(f"actorchat: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (``actorchat chat ... | head``): not an error of
        # ours, and Python would print another one flushing stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
