"""``python -m aos_gateway.contracts.release``: check schema changes and snapshot new versions."""

from __future__ import annotations

import sys

from aos_gateway.contracts.compat import release
from aos_gateway.errors import SchemaCompatibilityError

if __name__ == "__main__":
    try:
        written = release()
    except SchemaCompatibilityError as exc:
        print(f"incompatible schema change: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print("\n".join(str(p) for p in written) or "nothing to release")
