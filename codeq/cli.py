"""The ``codeq`` command line."""

from __future__ import annotations

import argparse
import sys

from codeq import __version__, config, ops


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codeq", description="codeQ queueing service")
    parser.add_argument("--version", action="version", version=f"codeq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the codeQ HTTP service. Every setting can also come from the "
        "environment (CODEQ_<NAME>) or a TOML config file (--config); flags win over "
        "the environment, which wins over the file.",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML file of settings (snake_case keys)")
    serve.add_argument("--store", dest="store_url", metavar="URL",
                       help="alias of --store-url")
    for option in config.OPTIONS:
        if option.name == "store_url":
            dest, flag = "store_url_flag", option.flag
        else:
            dest, flag = option.name, option.flag
        many = isinstance(option.default, tuple)
        serve.add_argument(
            flag, dest=dest, metavar=option.name.upper(), choices=option.choices,
            help=f"{option.help} [env {option.env}] (default: {option.default!r})",
            default=None, action="append" if many else "store",
        )
    ops.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":
        return ops.run(args)
    if args.command == "serve":
        flags = {o.name: getattr(args, o.name, None) for o in config.OPTIONS}
        flags["store_url"] = args.store_url or args.store_url_flag
        try:
            settings = config.load(args.config, flags)
        except (ValueError, OSError) as exc:
            print(f"codeq: {exc}", file=sys.stderr)
            return 2
        from codeq.server import run

        try:
            return run(settings)
        except (OSError, RuntimeError) as exc:
            # Cannot listen, or the embedded store would not start: say so
            # plainly instead of a traceback.
            print(f"codeq: {exc}", file=sys.stderr)
            return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
