"""Issue 23: a brand.init whose base_init keeps a run-time copy of the
platform file (`rm -f $LHN_RUN/platform.xml`, then a link there to the
brand's platform.xml) converts through the real CLI: those statements name
another directory than the link vsaimage makes, so the platform edit is
applied without a note and `verify` passes. (The boot test boots it.)"""

from __future__ import annotations

import pytest

from fixtures.build_image import BRAND_INIT, PLATFORM_DIR
from support import Variant, run_cli

pytestmark = pytest.mark.integration


def test_converts_with_the_platform_edit_applied_and_no_note(runtime_platform_converted: Variant) -> None:
    doc = runtime_platform_converted.run.doc
    step = next(s for s in doc["steps"] if s["step"] == "platform")
    assert step["status"] == "applied"
    assert step["details"]["link"] == f"{PLATFORM_DIR}/platform.xml -> platform.xml.vmw"
    assert "notes" not in step["details"], step["details"]
    assert [c.get("write") for c in step["changes"]] == [BRAND_INIT]


def test_verify_passes(runtime_platform_converted: Variant) -> None:
    r = run_cli("verify", runtime_platform_converted.out, "--initrd", runtime_platform_converted.initrd,
                "--json")
    assert r.code == 0, r.stderr
    assert not r.doc["missing"]
