"""The baseline the serving benchmark compares against: the Flask template most tutorials ship.

It loads ``model.keras`` with TensorFlow and, per request, decodes the upload with Pillow, resizes it
straight to the input size and calls ``model.predict`` - the pattern the app replaces with a LiteRT
interpreter, draft-mode JPEG decoding and a warm, preloaded model. It answers the same route
(``POST /api/v1/predictions`` with an ``image`` field, 201 + top-k JSON) so that one load generator can
drive both servers. It keeps no database: the comparison is generous to the baseline.

Run with ``MODEL_DIR=model_artifacts/default gunicorn benchmarks.baseline_app:app``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import keras
import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

MODEL_DIR = Path(os.environ.get("MODEL_DIR", "model_artifacts/default"))

app = Flask(__name__)
model = keras.models.load_model(MODEL_DIR / "model.keras", compile=False)
labels = json.loads((MODEL_DIR / "labels.json").read_text(encoding="utf-8"))
height, width = json.loads((MODEL_DIR / "metadata.json").read_text(encoding="utf-8"))["image_size"]


@app.post("/api/v1/predictions")
def predict():
    """Classify the uploaded photo the way the copied templates do."""
    upload = request.files.get("image")
    if upload is None:
        return jsonify({"error": "no image"}), 400
    image = Image.open(io.BytesIO(upload.read())).convert("RGB").resize((width, height))
    batch = np.expand_dims(np.asarray(image, dtype="float32"), 0)
    outputs = model.predict(batch, verbose=0)
    # A model with a make output beside the classes returns both; the template reads the first.
    probabilities = (outputs[0] if isinstance(outputs, (list, tuple)) else outputs)[0]
    top = np.argsort(probabilities)[::-1][:5]
    return jsonify({"predictions": [{"label": labels[i], "score": float(probabilities[i])} for i in top]}), 201


@app.get("/healthz")
def healthz():
    """Liveness, as in the app."""
    return jsonify({"status": "ok"})
