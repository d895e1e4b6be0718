"""Forms of the upload page."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import SubmitField

from ..inference.imaging import ACCEPTED_CONTENT_TYPES


class UploadForm(FlaskForm):
    """One photo. The server checks the content itself; ``accept`` only guides the file picker."""

    image = FileField("Car photo", render_kw={"accept": ",".join(ACCEPTED_CONTENT_TYPES)})
    submit = SubmitField("Classify")
