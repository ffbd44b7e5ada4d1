"""An `--input` or `--output` file of `init` and `new` (FILE=MEDIA_TYPE, checked as model.yaml's schema would),
and ScaffoldError, which every author command reports as a usage error.

Below scaffold.py and templates.py, which both take these, so neither needs the other's module.
"""

import keyword
import re
from dataclasses import dataclass

from grpc_model.src.metadata.names import file_name_problem, media_type_problem


class ScaffoldError(Exception):
    """The command would overwrite something or leave a model the server cannot serve."""


@dataclass(frozen=True)
class FileSpec:
    """One input or output file of `init`: its name and media type."""

    name: str
    media_type: str

    @classmethod
    def parse(cls, text: str, option: str, families: bool = False) -> "FileSpec":
        """`FILE=MEDIA_TYPE` as given to `option`; refuses what model.yaml's schema would (names.py's rules).

        `families` allows `image/*` and `*/*`, as an input's accepted types may be."""
        name, sep, media_type = text.partition("=")
        if not sep:
            raise ScaffoldError(f"{option} {text!r} must look like FILE=MEDIA_TYPE, e.g. image.png=image/png")
        if problem := file_name_problem(name):
            raise ScaffoldError(f"{option} {text!r}: the file name {name!r} {problem}")
        if problem := media_type_problem(media_type.strip(), families):
            raise ScaffoldError(f"{option} {text!r}: the media type {media_type!r} {problem}")
        return cls(name, media_type.strip())

    @property
    def variable(self) -> str:
        """A Python name for the file's bytes in the generated wrapper: `input.txt` -> `input_txt`."""
        name = re.sub(r"\W+", "_", self.name).strip("_").lower()
        if not name.isidentifier():  # \w has characters identifiers do not, such as "²"
            name = re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "data"
        return f"file_{name}" if name[0].isdigit() or keyword.iskeyword(name) else name
