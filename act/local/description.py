"""The local back end's job description: a small JSON document.

Example::

    {"executable": "/bin/sh", "arguments": ["-c", "./run.sh > result.txt"],
     "environment": {"PANDA_JSID": "act"}, "inputs": ["run.sh"], "outputs": ["result.txt"],
     "walltime": 3600, "cores": 1}

* ``executable`` (required): a command looked up in ``PATH``, or a path; a relative path (with a
  ``/``) is relative to the job's working directory, where the inputs are.
* ``arguments``: list of strings. ``environment``: variables added to a small base environment
  (PATH, HOME, LANG, LC_ALL, TMPDIR, TZ, USER, LOGNAME, SHELL of the submitting process).
* ``inputs``: files of the request's ``input_dir`` copied into the working directory.
* ``outputs``: files (or directories) of the working directory that fetch returns, besides
  ``stdout`` and ``stderr`` (reserved names).
* ``output_list``: a file of the working directory that the payload writes, naming the files the
  CE uploads once the payload has ended (an ARC CE's dynamic output list, xRSL ``@output.list``):
  one ``NAME URL`` per line, the URL (``root://``, ``file://``) optionally followed by
  ``:checksumtype=adler32:checksumvalue=HEX``; see :mod:`act.local.stageout`.
* ``walltime``: seconds the payload may run (default 86400); then it is killed and the job FAILED.
* ``cores``: slots the job takes (default 1).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

from pydantic import Field, ValidationError, field_validator

from act.common.safe_paths import safe_relative
from act.common.section import Section

RESERVED = frozenset({"stdout", "stderr"})
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DescriptionError(ValueError):
    """A description the local back end cannot run; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"job description: {field}: {problem}")
        self.field = field
        self.problem = problem


class LocalJob(Section):
    """A local CE job."""

    executable: str = Field(min_length=1, max_length=4096)
    arguments: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    output_list: str | None = None
    walltime: float = Field(86400.0, gt=0)
    cores: int = Field(1, ge=1)

    @field_validator("executable", "arguments", "environment")
    @classmethod
    def _no_nul(cls, value: str | list[str] | dict[str, str]) -> str | list[str] | dict[str, str]:
        items = [value] if isinstance(value, str) else list(value)
        if isinstance(value, dict):
            items += list(value.values())
        if any("\x00" in item for item in items):
            raise ValueError("NUL characters are not allowed")
        return value

    @field_validator("environment")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a variable name")
        return value

    @field_validator("inputs", "outputs")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        return [safe_relative(name) for name in value]

    @field_validator("output_list")
    @classmethod
    def _relative_list(cls, value: str | None) -> str | None:
        return None if value is None else safe_relative(value)

    @field_validator("outputs")
    @classmethod
    def _not_reserved(cls, value: list[str]) -> list[str]:
        for name in value:
            if PurePosixPath(name).parts[0] in RESERVED:
                raise ValueError(f"{name!r}: stdout and stderr are returned anyway")
        return value

    def to_description(self) -> str:
        data = self.model_dump(mode="json")
        if data["output_list"] is None:
            del data["output_list"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> LocalJob:
        """Parse and check a description; DescriptionError names the first bad field."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise DescriptionError("(document)", f"not JSON: {error}") from None
        if not isinstance(data, dict):
            raise DescriptionError("(document)", "must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "(document)"
            problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            raise DescriptionError(field, problem) from None
