"""PanDA job -> CE job description: ARC xRSL (:func:`to_xrsl`) and HTCondor (:func:`to_condor`).

Both are pure functions of a :class:`JobInput` and a CE: they return the description text and the
local files to ship with it (:class:`Translation`); the caller writes the files to ``input_dir``.
"""

from __future__ import annotations

from act.atlas.translate.common import (
    JobInput,
    Translation,
)
from act.atlas.translate.condor import to_condor
from act.atlas.translate.errors import TranslationError
from act.atlas.translate.xrsl import to_xrsl

__all__ = ["JobInput", "Translation", "TranslationError", "to_condor", "to_xrsl"]
