"""Two gunicorn workers on one database: a label taught through one worker (the admin page) is answered
by the other, which had already loaded its empty gallery, without a restart.

The access log names the worker (``pid``) that served each request id, so the test knows which worker
taught and asks until the other one answers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid

import pytest
import requests

from gunicorn_support import loadtest_script, running_gunicorn
from support import REPO_ROOT, SHARED, encode

pytestmark = pytest.mark.slow

MODEL_DIR = REPO_ROOT / "model_artifacts" / "default"
TAUGHT_DIR = SHARED / "datasets" / "web-makes" / "other-makes" / "train" / "Mahindra"
PASSWORD = "two workers password"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
ATTEMPTS = 40


def served_by(log_path, request_id: str) -> int | None:
    """The pid of the worker whose access log line carries ``request_id``."""
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if request_id in line and line.startswith("{"):
            entry = json.loads(line)
            if entry.get("request_id") == request_id and entry.get("logger") == "app.access":
                return entry.get("pid")
    return None


def ask(base: str, log_path, data: bytes) -> tuple[int | None, dict | None]:
    """Classify ``data`` on a fresh connection; returns (worker pid, answer)."""
    request_id = uuid.uuid4().hex
    response = requests.post(f"{base}/api/v1/predictions", files={"image": ("car.jpg", data, "image/jpeg")},
                             headers={"X-Request-ID": request_id, "Connection": "close"}, timeout=60)
    assert response.status_code == 201, response.text
    for _ in range(50):  # the access line is written as the response leaves
        pid = served_by(log_path, request_id)
        if pid:
            return pid, response.json()["answer"]
        time.sleep(0.1)
    return None, response.json()["answer"]


def test_a_label_taught_through_one_worker_is_answered_by_the_other(tmp_path):
    if not TAUGHT_DIR.is_dir():
        pytest.skip(f"real photos not available: {TAUGHT_DIR} is missing")
    from PIL import Image, ImageOps

    photos = sorted(TAUGHT_DIR.glob("*.jpg"))[:4]
    image = ImageOps.mirror(Image.open(photos[0]).convert("RGB"))
    asked = encode(image, "JPEG", quality=88)
    loadtest_script()
    with running_gunicorn(MODEL_DIR, tmp_path, WEB_CONCURRENCY="2", GUNICORN_THREADS="1", LOG_FORMAT="json",
                          GALLERY_CHECK_SECONDS="0.5") as (server, database):
        base, log_path = f"http://127.0.0.1:{server.port}", server.log_path
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "MODEL_DIR": str(MODEL_DIR),
               "ADMIN_PASSWORD": PASSWORD}
        created = subprocess.run([str(loadtest_script().BIN / "flask"), "--app", "wsgi", "create-admin", "operator"],
                                 cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stderr
        # Both workers answer (and so load their empty gallery) before anything is taught.
        before, workers = {}, set()
        for _ in range(ATTEMPTS):
            pid, answer = ask(base, log_path, asked)
            workers.add(pid)
            before[pid] = answer
            if len(workers) == 2:
                break
        assert len(workers) == 2, f"one worker served every request: {workers}"
        assert all(a is None or a["source"] == "model" for a in before.values())

        admin = requests.Session()
        page = admin.get(f"{base}/admin/login", timeout=30).text
        admin.post(f"{base}/admin/login", data={"username": "operator", "password": PASSWORD, "next": "",
                                                "csrf_token": CSRF.search(page).group(1)}, timeout=30)
        token = CSRF.search(admin.get(f"{base}/admin/gallery", timeout=30).text).group(1)
        request_id = uuid.uuid4().hex
        taught = admin.post(f"{base}/admin/gallery", data={"csrf_token": token, "label": "Mahindra", "level": "make"},
                            files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos],
                            headers={"X-Request-ID": request_id}, timeout=120, allow_redirects=False)
        assert taught.status_code == 302, taught.text
        time.sleep(0.3)
        teacher = served_by(log_path, request_id)
        assert teacher in workers
        time.sleep(0.6)  # past GALLERY_CHECK_SECONDS: the other worker asks the database again
        for _ in range(ATTEMPTS):
            pid, answer = ask(base, log_path, asked)
            if pid != teacher:
                break
        assert pid is not None and pid != teacher, "the other worker never answered"
        if before[pid] is not None and before[pid]["score"] >= 0.99:
            pytest.skip("the model is surer of its own answer than any similarity")
        assert answer["source"] == "gallery" and answer["label"] == "Mahindra"
        assert answer["learned_from"] == len(photos)
