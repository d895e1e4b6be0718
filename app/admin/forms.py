"""Admin forms: sign-in, corrections and teaching the gallery (all CSRF-protected; the review filters are a
plain GET form)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, MultipleFileField, PasswordField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional


class LoginForm(FlaskForm):
    """Username and password; ``next`` carries the page to return to."""

    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()
    submit = SubmitField("Sign in")


class CorrectionForm(FlaskForm):
    """Confirm the model's answer, or give the true label (a known label or a new one)."""

    label = StringField("True label", validators=[Optional(), Length(max=255)])
    mark_correct = SubmitField("Model was right")
    save_label = SubmitField("Save true label")

    def chosen_label(self, model_label: str) -> str | None:
        """The label to store: the model's own when confirmed, else the typed one (None when empty)."""
        if self.mark_correct.data:
            return model_label
        typed = (self.label.data or "").strip()
        return typed or None


class DeleteCorrectionForm(FlaskForm):
    """Withdraw a correction (the prediction goes back to uncorrected)."""

    submit = SubmitField("Remove correction")


class LogoutForm(FlaskForm):
    """Sign out (a POST with the CSRF token, so another site cannot sign an admin out)."""

    submit = SubmitField("Sign out")


class TeachForm(FlaskForm):
    """Teach a label by example: the label, its level, and photos (many at once)."""

    label = StringField("Label", validators=[DataRequired(), Length(max=255)],
                        render_kw={"placeholder": "Fiat Argo 2022, or a make: Citroen"})
    level = SelectField("Level (class: one model of car; make: every car of a make)", choices=["class", "make"],
                        default="class")
    photos = MultipleFileField("Photos")
    submit = SubmitField("Teach")


class RemoveTaughtForm(FlaskForm):
    """Forget a taught label (every example of it)."""

    label = HiddenField(validators=[DataRequired(), Length(max=255)])
    submit = SubmitField("Remove")


class TeachFromCorrectionForm(FlaskForm):
    """Add a corrected photo to the gallery under its corrected label, in one click."""

    level = SelectField("Level", choices=["class", "make"], default="class")
    submit = SubmitField("Teach this photo")
