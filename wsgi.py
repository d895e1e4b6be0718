"""WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi ...``.

A missing or broken model artifact ends the process with its one-line explanation on stderr and exit
status 1, rather than a traceback.
"""

import sys

from app import create_app
from inference.classifier import ArtifactError

try:
    app = create_app()
except (ArtifactError, ValueError) as exc:  # ValueError: an environment variable that does not parse
    sys.exit(f"error: {exc}")
