"""Validates an OpenAPI document with openapi-spec-validator (independent of the gateway).

Usage: openapi.py FILE  ->  prints the first error and exits 1, or exits 0 when valid.
"""

import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError


def main(path):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    try:
        validate(spec)
    except OpenAPIValidationError as e:
        print(f"invalid: {e.message} at {'/'.join(str(p) for p in e.path)}")
        return 1
    print("valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
