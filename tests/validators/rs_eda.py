"""Checks a SAMU Hub RS-EDA message (bare `{"createCaseHealth": ...}`) against the Hub's
published RS-EDA.schema.json (draft-07), read from ../shared/fixtures/hub beside the
repository. Exit 0: valid; 1: invalid (each error on a line); 2: the schema is absent."""

import json
import pathlib
import sys

import jsonschema

SCHEMA = (
    pathlib.Path(__file__).resolve().parents[2]
    / ".." / "shared" / "fixtures" / "hub" / "json-schema" / "RS-EDA.schema.json"
)


def main() -> int:
    if not SCHEMA.is_file():
        print(f"schema absent: {SCHEMA}")
        return 2
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    message = json.loads(pathlib.Path(sys.argv[1]).read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(message["createCaseHealth"]))
    for error in errors:
        print(list(error.path), error.message[:200])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
