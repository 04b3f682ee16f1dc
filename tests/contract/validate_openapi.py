#!/usr/bin/env python3
"""Validate Chronicle's OpenAPI document with openapi-spec-validator (OpenAPI 3.1).

Where the document comes from, in this order:
  validate_openapi.py URL_OR_FILE      a served /openapi.json (http...) or a file;
  validate_openapi.py                  `cargo run -q -- openapi` (no database needed).

Prints the error count (and the first errors), exits 0 only when there are none.
An unresolvable $ref counts as an error instead of crashing the run.
"""

import json
import subprocess
import sys
import urllib.request

from openapi_spec_validator import OpenAPIV31SpecValidator


def load(source):
    if source is None:
        out = subprocess.run(
            ["cargo", "run", "-q", "--", "openapi"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as answer:
            return json.load(answer)
    with open(source, encoding="utf-8") as f:
        return json.load(f)


def main():
    doc = load(sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    except Exception as e:  # a reference to nowhere stops the validator itself
        errors = [f"validator stopped: {type(e).__name__}: {str(e)[:300]}"]
    operations = sum(
        1
        for item in doc.get("paths", {}).values()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    )
    size = len(json.dumps(doc, separators=(",", ":")))
    print(f"openapi {doc.get('openapi')}: {operations} operations, {size} bytes (compact JSON)")
    for error in errors[:20]:
        print(f"  - {error}")
    print(f"errors: {len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
