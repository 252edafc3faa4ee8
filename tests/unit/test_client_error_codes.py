"""The TypeScript client knows exactly the error codes the server sends (sync/errors.py)."""

from __future__ import annotations

import re
from pathlib import Path

from sync.errors import ErrorCode

ERRORS_TS = Path(__file__).resolve().parents[2] / "clients" / "typescript" / "src" / "errors.ts"


def test_typescript_error_codes_equal_the_servers() -> None:
    block = re.search(r"ERROR_CODES = \[(.*?)\] as const", ERRORS_TS.read_text(), re.S)
    assert block, "ERROR_CODES not found in errors.ts"
    assert re.findall(r'"([a-z_]+)"', block.group(1)) == [c.value for c in ErrorCode]
