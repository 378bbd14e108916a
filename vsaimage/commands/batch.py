"""Several images in one appliance launch (convert and verify): a failure of
one image is recorded with it, its temporaries go, and the others carry on;
the result document lists every image, and which failed and why.

With a single image nothing is caught: its error propagates as it always has
(one line, its own exit code).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vsaimage import cancel
from vsaimage.errors import Failure
from vsaimage.progress import Progress


@dataclass
class Item:
    """One image of a run: as the user wrote it, the reporter its phases and
    warnings go to, and its failure once it has failed."""

    text: str
    rep: Progress
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@contextlib.contextmanager
def attempt(item: Item, *, alone: bool, clean_up: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Run the block for `item`. Alone, a failure propagates. In a batch it
    is recorded on the item, `clean_up` runs and one error line naming the
    image is shown; the batch goes on. Ctrl-C and SIGTERM stop everything:
    they kill the appliance, whose calls then fail with ordinary errors, so
    a cancellation is checked for before any error is taken as the image's."""
    try:
        yield
    except Exception as e:
        cancel.check()
        if alone:
            raise
        clean_up()
        fail(item, Failure.of(e))


def fail(item: Item, failure: Failure) -> None:
    item.failure = failure
    named = failure.message if failure.message.startswith(item.text) else f"{item.text}: {failure.message}"
    item.rep.error(named, failure.hint)
