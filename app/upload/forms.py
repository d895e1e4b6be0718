"""Forms of the upload page and the result page."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import SubmitField

from inference.imaging import ACCEPTED_CONTENT_TYPES


class UploadForm(FlaskForm):
    """One photo. The server checks the content itself; ``accept`` only guides the file picker."""

    image = FileField("Car photo", render_kw={"accept": ",".join(ACCEPTED_CONTENT_TYPES)})
    submit = SubmitField("Classify")


class ExampleForm(FlaskForm):
    """The example row: each photo is a submit button whose value names the example (CSRF token only here)."""
