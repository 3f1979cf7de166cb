"""One exception tree for cadence: every public error says what was wrong and what to do.

Transports turn a `CadenceError` into an `error` event (its `code` and message) and the
session goes on; anything else is a bug.
"""

from __future__ import annotations


class CadenceError(Exception):
    """Base of every error cadence raises on purpose."""

    code = "cadence_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CadenceError):
    """A configuration value is missing, unknown or out of range."""

    code = "invalid_config"


class InputError(CadenceError):
    """Input from a user or client is malformed or cannot be used."""

    code = "invalid_request_error"


class AudioFormatError(InputError):
    """Audio has a layout, dtype or sample rate that cannot be converted unambiguously."""

    code = "invalid_audio"


class AudioFileError(InputError):
    """An audio file is corrupt, empty, unsupported or too long."""

    code = "invalid_audio_file"


class ImageError(InputError):
    """An image is corrupt, too large or of an unsupported kind."""

    code = "invalid_image"


class ProtocolError(InputError):
    """A protocol message is malformed, too large or of an unknown type."""

    code = "invalid_event"


class LimitExceeded(InputError):
    """A configured limit (size, rate, count, duration) was exceeded."""

    code = "limit_exceeded"


class AuthError(CadenceError):
    """Missing or wrong credentials."""

    code = "invalid_api_key"


class ModelError(CadenceError):
    """A model could not be loaded or failed while running."""

    code = "model_error"


class ModelNotInstalled(ModelError):
    """The package that ships a model's files is not installed."""

    code = "model_not_installed"


class BackendUnavailable(ModelError):
    """A remote serving engine is down, refused, or answered with an error."""

    code = "backend_unavailable"


class StageTimeout(ModelError):
    """A model stage stalled past its time limit."""

    code = "stage_timeout"
