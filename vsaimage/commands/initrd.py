"""`vsaimage initrd IN -o OUT`: the initrd repack alone, with the same output
safety as convert (staged, renamed at the end)."""

from __future__ import annotations

from typing import Any

from vsaimage.commands import results
from vsaimage.commands.options import InitrdOptions
from vsaimage.errors import InitrdError
from vsaimage.initrd import repack as initrd
from vsaimage.inputs.source import open_input
from vsaimage.outputs.staging import Staging, check_destination, open_output
from vsaimage.progress import Progress


def run(opts: InitrdOptions, rep: Progress) -> dict[str, Any]:
    with open_input(opts.input, InitrdError, "an initrd") as src:
        check_destination([opts.output], force=opts.force, inputs=[opts.input])
        with Staging([opts.output]) as staging:
            with rep.phase("initrd repack"), open_output(staging.temp(opts.output),
                                                         label=opts.output) as out:
                result = initrd.repack(src, out, compression=opts.compression)
            staging.commit()
    for key in ("input_compression", "compression", "early_segments", "entries", "added", "changed",
                "removed"):
        rep.debug(f"{key.replace('_', ' ')}: {getattr(result, key)}")
    return results.single("initrd", results.common(), {
        "success": True, "input": str(opts.input), "output": str(opts.output), **result.as_dict()})
