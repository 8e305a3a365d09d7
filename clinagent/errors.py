"""Exceptions raised by clinagent.

    Exception
     +-- ConfigError            developer misuse or bad configuration (wrong option, missing file setting)
     +-- ClinAgentError         a runtime failure with context
          +-- RecordError       a FHIR input that cannot be read: carries the file and the field (JSON pointer)

Signals to the model (ModelRetry) come from pydantic-ai and are not part of this tree.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The caller configured clinagent wrongly."""


class ClinAgentError(Exception):
    """Base of runtime failures."""


class RecordError(ClinAgentError):
    """A FHIR file or resource that cannot be read. ``where`` names the file, ``field`` the place inside it."""

    def __init__(self, message: str, *, where: str = "", field: str = "") -> None:
        self.message, self.where, self.field = message, where, field
        loc = where + (f" at {field}" if field else "")
        super().__init__(f"{loc}: {message}" if loc else message)
