"""The `lift3d` command line: thin subcommands over the library.

Each subcommand lives in ``lift3d/commands/<name>.py`` and exposes ``HELP`` (one line),
``EXAMPLE`` (shown in its ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.
Heavy imports (torch, MONAI) happen inside ``run`` so ``lift3d --help`` stays fast.

Bad input (`lift3d.errors.InputError`) prints one line and exits with code 2; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lift3d import __version__
from lift3d.errors import InputError

# (subcommand, module under lift3d.commands); help lines come from each module's HELP.
COMMANDS: list[tuple[str, str]] = [
    ("phantom", "phantom"),
    ("inspect", "inspect"),
    ("train", "train"),
    ("translate", "translate"),
    ("synthesize-missing", "synthesize_missing"),
    ("generate", "generate"),
    ("evaluate", "evaluate"),
    ("bench", "bench"),
    ("report", "report"),
]

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lift3d",
        description="3D medical image synthesis from 2D slice models (LiFT).",
        epilog="Run 'lift3d <command> --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"lift3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, module_name in COMMANDS:
        module = importlib.import_module(f"lift3d.commands.{module_name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run one subcommand. Returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        if args.debug:
            raise
        print(f"lift3d {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"lift3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
