"""Starts a new model version: `python scripts/new_version.py X.Y.Z [--root DIR]`.

Copies the current bundle `asset_bundle/<current>/` (test cases included) to
`asset_bundle/X.Y.Z/` and moves every place that names the served version to X.Y.Z:
`version:` in the new model.yaml, `__version__` in grpc_model/__init__.py, `version` in
pyproject.toml and `ARG MODEL_VERSION` in the Dockerfile. Comments and layout of each
file are kept: only the version text is replaced.
"""

import argparse
import re
import shutil
import sys
from pathlib import Path

SEMVER = re.compile(r"^\d+\.\d+\.\d+$")

# (file, pattern whose group 2 is the version); each must match exactly once.
VERSION_PLACES = [
    ("grpc_model/__init__.py", r'^(__version__ = ")([^"]+)(")'),
    ("pyproject.toml", r'^(version = ")([^"]+)(")'),
    ("Dockerfile", r"^(ARG MODEL_VERSION=)(\S+)()"),
]
MODEL_YAML_VERSION = r"^(version:\s*['\"]?)([^'\"\s#]+)(['\"]?)"


def current_version(root: Path) -> str:
    match = re.search(VERSION_PLACES[0][1], (root / VERSION_PLACES[0][0]).read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit("error: no __version__ in grpc_model/__init__.py")
    return match.group(2)


def replace_version(path: Path, pattern: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    updated, count = re.subn(pattern, rf"\g<1>{new}\g<3>", text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"error: {path}: found no version line matching {pattern!r}")
    path.write_text(updated, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="the new version, three dot-separated integers")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="project root")
    args = parser.parse_args(argv)
    new, root = args.version, args.root

    if not SEMVER.match(new):
        raise SystemExit(f"error: {new!r} is not a version of three dot-separated integers, e.g. 1.2.0")
    old = current_version(root)
    source, target = root / "asset_bundle" / old, root / "asset_bundle" / new
    if target.exists():
        raise SystemExit(f"error: {target} already exists")
    if not source.is_dir():
        raise SystemExit(f"error: the current bundle {source} does not exist")

    shutil.copytree(source, target)
    replace_version(target / "model.yaml", MODEL_YAML_VERSION, new)
    for relative_path, pattern in VERSION_PLACES:
        replace_version(root / relative_path, pattern, new)

    print(f"version {old} -> {new}")
    print(f"  created asset_bundle/{new}/ from asset_bundle/{old}/")
    for relative_path in [f"asset_bundle/{new}/model.yaml"] + [place[0] for place in VERSION_PLACES]:
        print(f"  updated {relative_path}")
    print(f"Next: edit releaseNotes and what changed in asset_bundle/{new}/model.yaml, and its test cases.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
