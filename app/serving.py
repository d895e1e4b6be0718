"""The models the current app serves, reached through accessors over ``app.extensions``."""

from __future__ import annotations

from flask import current_app

from inference.classifier import Classifier
from inference.gate import VehicleGate


def get_classifier() -> Classifier:
    """The classifier loaded into the current app."""
    return current_app.extensions["classifier"]


def get_vehicle_gate() -> VehicleGate | None:
    """The vehicle gate of the current app (``None`` when it is off)."""
    return current_app.extensions.get("vehicle_gate")
