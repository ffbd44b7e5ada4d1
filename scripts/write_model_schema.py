"""Writes asset_bundle/model.schema.json, the JSON Schema of model.yaml, for editors.

Editors with YAML language support (VS Code's YAML extension, JetBrains IDEs) read the
`# yaml-language-server: $schema=../model.schema.json` line at the top of model.yaml
and then complete keys and flag mistakes as you type. Run after changing the schema;
a test fails while the committed file is stale.
"""

from pathlib import Path

from grpc_model.src.metadata.schema import json_schema_text

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "asset_bundle" / "model.schema.json"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(json_schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
