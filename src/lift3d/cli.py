"""The `lift3d` command line: thin subcommands over the library.

Each subcommand lives in ``lift3d/commands/<name>.py`` and exposes ``HELP`` (one line),
``EXAMPLE`` (shown in its ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.
Heavy imports (torch, MONAI) happen inside ``run`` so ``lift3d --help`` stays fast.

Bad input (`lift3d.errors.InputError`) prints one line and exits with code 2; so does an
`OSError` a user can fix (permission denied, read-only file system, full disk ...) that no
writer turned into an `InputError`. ``--debug`` shows the traceback instead. Ctrl-C and SIGTERM
stop the command through its cleanup (temporary files removed) with exit code 130 / 143.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator

from lift3d.errors import InputError
from lift3d.utils import tune_allocator
from lift3d.version import __version__

# (subcommand, module under lift3d.commands, one-line help). Only the chosen subcommand's module
# is imported, so `lift3d --help` needs no torch.
# fmt: off
COMMANDS: list[tuple[str, str, str]] = [
    ("phantom", "phantom", "write a seeded synthetic head-phantom dataset (BraTS or SynthRAD layout)"),
    ("inspect", "inspect", "report a dataset's layout, cases, shapes, spacings and problems"),
    ("train", "train", "train a LiFT model (translate: MR->CT / missing modality; generate)"),
    ("store", "store", "build a dataset's preprocessed on-disk store ahead of training"),
    ("translate", "translate", "translate a volume or a dataset with a trained model (e.g. MR->CT)"),
    ("synthesize-missing", "synthesize_missing", "write the one missing BraTS modality of a case"),
    ("generate", "generate", "sample new 3D volumes from a trained unconditional model"),
    ("evaluate", "evaluate", "score predictions against references (SynthRAD, BraSyn, coherence, FID/KID)"),
    ("bench", "bench", "inference cost of LiFT vs a cWDM-configured 3D wavelet diffusion reference"),
    ("report", "report", "build a self-contained HTML report from a run or evaluation folder"),
]
# fmt: on

EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 128 + signal.SIGTERM

# OSErrors that are the user's to fix (a folder's permissions, a read-only mount, a full disk).
USER_OS_ERRORS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
    }
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup (temporary files) runs on the way out."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _chosen_command(argv: list[str]) -> str | None:
    names = {name for name, _, _ in COMMANDS}
    for token in argv:
        if token in names:
            return token
        if not token.startswith("-"):
            return None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the subcommand named in `argv` gets its full arguments."""
    chosen = _chosen_command(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        prog="lift3d",
        description="3D medical image synthesis from 2D slice models (LiFT).",
        epilog="Run 'lift3d <command> --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"lift3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, module_name, help_line in COMMANDS:
        if name != chosen:
            sub.add_parser(name, help=help_line)
            continue
        module = importlib.import_module(f"lift3d.commands.{module_name}")
        p = sub.add_parser(
            name,
            help=help_line,
            description=module.HELP,
            epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS: an unset sub-level --debug must not reset a top-level `lift3d --debug ...`
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks for errors",
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run one subcommand. Returns the process exit code."""
    parser = build_parser(argv)
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
        # Training keeps freed tensor memory in the heap for the next step (`tune_allocator`:
        # faster, a higher peak; LIFT3D_MALLOC=reuse|default decides for every command).
        tune_allocator(reuse_by_default=args.command == "train")
        with _sigterm_as_interrupt():
            return int(args._run(args) or 0)
    except InputError as exc:
        if args.debug:
            raise
        print(f"lift3d {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if args.debug or exc.errno not in USER_OS_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"lift3d {args.command}: error: {where}{exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print(f"lift3d {args.command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"lift3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
