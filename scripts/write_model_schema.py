"""Writes asset_bundle/model.schema.json, the JSON Schema of model.yaml, for editors.

Editors with YAML language support (VS Code's YAML extension, JetBrains IDEs) read the
`# yaml-language-server: $schema=../model.schema.json` line at the top of model.yaml
and then complete keys and flag mistakes as you type. Run after changing the schema;
a test fails while the committed file is stale.
"""

import json
from pathlib import Path

from grpc_model.src.metadata import ModelSpec

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "asset_bundle" / "model.schema.json"


def model_schema_text() -> str:
    schema = ModelSpec.model_json_schema()
    schema["title"] = "model.yaml (specification 0.4)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(model_schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
