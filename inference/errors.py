"""Why the model side could not answer: one error family, each error a stable code and a message for a person.

The model side knows nothing of HTTP. Callers decide what an error means to them: the web app turns the
code into a status (``app/errors.py``), ``flask classify`` prints the message, a benchmark records the code.

* :class:`ImageRejected` - the bytes are not a photo this side can classify (empty, too many pixels,
  not a supported format, corrupt);
* :class:`ExplanationUnavailable` - no heatmap can be drawn for this model or this answer.
"""

from __future__ import annotations


class InferenceError(Exception):
    """A request the model side cannot answer.

    Args:
        code: Stable machine-readable code, e.g. ``corrupt_image``.
        message: Plain-language explanation for a person.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class ImageRejected(InferenceError):
    """Uploaded bytes that cannot be classified."""


class ExplanationUnavailable(InferenceError):
    """No heatmap can be made: the model's head cannot be explained, or it has no such label."""
