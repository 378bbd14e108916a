"""Command line: parses the arguments (argv.py, from the option table) into
option sets, runs the command, maps exceptions to exit codes (0 ok, 1
failure, 2 bad input or usage, 130 interrupted), and shows the result: the
live console (console.py) while it runs, the renderers (render.py) or one
JSON document at the end. Nothing else."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

from vsaimage.cli import argv
from vsaimage.cli.console import Reporter
from vsaimage.errors import Failure

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _run(a: argparse.Namespace, rep: Reporter) -> dict[str, Any]:
    # Imported here so that `--help` and usage errors stay instant.
    from vsaimage.commands import convert, inspect, verify
    from vsaimage.commands import initrd as initrd_command
    from vsaimage.commands.options import BatchOptions, VerifyBatch

    a = argv.checked(a)
    if a.command == "initrd":
        return initrd_command.run(argv.initrd_options(a), rep)
    if a.command == "inspect":
        return inspect.inspect(argv.inspect_options(a), rep)
    if a.command == "verify":
        v = argv.verify_options(a)
        return verify.verify_batch(v, rep) if isinstance(v, VerifyBatch) else verify.verify(v, rep)
    c = argv.convert_options(a)
    return convert.convert_batch(c, rep) if isinstance(c, BatchOptions) else convert.convert(c, rep)


def _show(a: argparse.Namespace, doc: dict[str, Any], rep: Reporter) -> None:
    from vsaimage.cli import render

    rep.close()  # the live console ends before the result is drawn
    if a.json:
        render.json(render.Screen(), doc)
    else:
        render.show(render.Screen(), a.command, doc)


class _Terminated(Exception):
    pass


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise _Terminated


def _run_cancellably(a: argparse.Namespace, rep: Reporter) -> dict[str, Any]:
    """Run the command in a worker thread so that Ctrl-C and SIGTERM take
    effect at once, even while the worker is blocked in the appliance."""
    from vsaimage import cancel

    outcome: dict[str, Any] = {}
    # An Event, not Thread.join(): a join interrupted by Ctrl-C marks the
    # thread as finished in CPython 3.11, and a second join would not wait.
    done = threading.Event()

    def work() -> None:
        try:
            outcome["doc"] = _run(a, rep)
        except BaseException as e:  # re-raised in the main thread
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="vsaimage", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except (KeyboardInterrupt, _Terminated):
        cancel.cancel()
        done.wait(60)  # the worker removes its temporaries as it unwinds
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["doc"]  # type: ignore[no-any-return]


def main(args: Sequence[str] | None = None) -> int:
    a = argv.parser().parse_args(args)
    rep = Reporter(verbosity=-1 if a.quiet else a.verbose)
    # SIGTERM unwinds like Ctrl-C, so temporaries are removed on the way out.
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        doc = _run_cancellably(a, rep)
        _show(a, doc, rep)
        return _batch_exit(doc) if doc.get("batch") else EXIT_OK if doc.get("success", True) else EXIT_FAILURE
    except (KeyboardInterrupt, _Terminated):
        rep.close()
        rep.error("interrupted; nothing was left under the output names")
        return EXIT_INTERRUPTED
    except Exception as e:  # VsaError, or a bug or an unexpected appliance failure
        return _fail(a, rep, Failure.of(e), e)
    finally:
        rep.close()
        signal.signal(signal.SIGTERM, previous)


def _batch_exit(doc: dict[str, Any]) -> int:
    """Several images: 0 when every one succeeded, 2 when each that failed
    was refused as bad input, else 1 (the document says which and why)."""
    codes = {d["error"]["exit_code"] if "error" in d else EXIT_FAILURE
             for d in doc["images"] if not d["success"]}
    if not codes:
        return EXIT_OK
    return EXIT_BAD_INPUT if codes == {EXIT_BAD_INPUT} else EXIT_FAILURE


def _fail(a: argparse.Namespace, rep: Reporter, failure: Failure, exc: BaseException) -> int:
    rep.close()
    if a.debug:
        traceback.print_exception(exc, file=sys.stderr)
    rep.error(failure.message, failure.hint)
    if a.json:
        from vsaimage.cli import render

        render.json(render.Screen(), {"success": False, "command": a.command, "error": failure.as_dict()})
    return failure.exit_code
