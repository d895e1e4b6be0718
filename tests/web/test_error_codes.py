"""Every code a refused request can carry has its HTTP status in ``app.errors.STATUSES``, the one table."""

from __future__ import annotations

import ast

from app.errors import STATUSES, RequestRejected, rejection_body, status_of
from inference.errors import ExplanationUnavailable, ImageRejected
from support import REPO_ROOT as REPO

REJECTION_CLASSES = {"InferenceError", "ImageRejected", "ExplanationUnavailable", "RequestRejected"}


def raised_codes() -> dict[str, str]:
    """``{code: where}`` for every rejection built with a literal code in ``app/`` and ``inference/``."""
    codes = {}
    for package in ("app", "inference"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in REJECTION_CLASSES
                        and node.args and isinstance(node.args[0], ast.Constant)):
                    codes[node.args[0].value] = f"{path.relative_to(REPO)}:{node.lineno}"
    return codes


def test_every_raised_code_has_a_status():
    codes = raised_codes()
    assert len(codes) >= 20  # the scan found the raise sites
    assert {code: where for code, where in codes.items() if code not in STATUSES} == {}


def test_the_model_side_and_the_web_layer_are_answered_alike():
    assert status_of(ImageRejected("corrupt_image", "Broken.")) == 422
    assert status_of(ExplanationUnavailable("explanation_unsupported", "No.")) == 501
    assert rejection_body(RequestRejected("already_answered", "Twice.")) == {
        "status": 409, "code": "already_answered", "message": "Twice."}
    assert status_of(RequestRejected("a_code_nobody_mapped", "Oops.")) == 500
