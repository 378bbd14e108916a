"""The exception tree. Every error a user can cause or meet carries a one-line
message (naming the file, partition or step) and an optional hint; cli/main.py maps
the class to an exit code and prints no traceback unless --debug."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path


class VsaError(Exception):
    """Base class: a failure that is not the user's input (exit 1)."""

    exit_code = 1
    kind = "failure"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(VsaError):
    """Something the user gave us is wrong or unusable (exit 2)."""

    exit_code = 2
    kind = "bad-input"


class ImageError(BadInput):
    """The disk image cannot be read, or holds no VSA system."""

    kind = "image"


class KernelError(BadInput):
    """The --kernel file is not a usable bzImage."""

    kind = "kernel"


class InitrdError(BadInput):
    """The --initrd file is not an initramfs-tools initrd we can repack."""

    kind = "initrd"


class EditError(BadInput):
    """A file in the guest does not look the way an edit expects."""

    kind = "edit"


class MissingFile(EditError):
    """A file an edit needs is absent from the guest (bypass with --skip)."""

    kind = "missing-file"


class GuestPathError(EditError):
    """A guest path the edits need leads somewhere they must not go (a
    dangling symlink, a loop, /proc, another filesystem)."""

    kind = "guest-path"


class OutputError(BadInput):
    """The output path is unusable (exists, is the input, no such directory)."""

    kind = "output"


class WriteError(VsaError):
    """Writing the output failed half-way (disk full, I/O error)."""

    kind = "write"


class ApplianceError(VsaError):
    """The libguestfs appliance failed to launch or to run a command."""

    kind = "appliance"


class MissingTool(VsaError):
    """A program vsaimage runs is not installed: the machine lacks it, not
    the user's input (exit 1, wherever it was needed)."""

    kind = "missing-tool"


class VerifyError(VsaError):
    """A postcondition does not hold after the edits."""

    kind = "verify"


def write_error(label: Path, e: OSError) -> VsaError:
    """The one-line error for a failed write of the output `label`."""
    if e.errno == errno.ENOSPC:
        return WriteError(f"{label}: no space left on device while writing",
                          hint="free some space or choose another output directory")
    return WriteError(f"{label}: cannot write: {e.strerror or e}")


@dataclass(frozen=True)
class Failure:
    """What the user is told of an error: its exit code, kind, one-line
    message and hint. Anything not a VsaError is a bug or an unexpected
    appliance failure (exit 1)."""

    exit_code: int
    kind: str
    message: str
    hint: str | None

    @classmethod
    def of(cls, e: BaseException) -> Failure:
        if isinstance(e, VsaError):
            return cls(e.exit_code, e.kind, e.message, e.hint)
        return cls(VsaError.exit_code, "internal", f"{type(e).__name__}: {e}".splitlines()[0],
                   "run again with --debug for a traceback")

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "message": self.message, "hint": self.hint,
                "exit_code": self.exit_code}
