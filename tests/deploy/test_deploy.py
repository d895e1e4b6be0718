"""Deployment files: the Dockerfile (read statically, then its start command run for real on the files it
copies), the App Engine ``app.yaml``, and gunicorn's choice of listening address.

No Docker engine is needed: the image's final stage is rebuilt as a folder from the Dockerfile's own COPY
lines, and its CMD runs there with its ENV, the way ``docker run`` would start it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from support import REPO_ROOT, manual_text
from browser_support import free_port, wait_until_ready

BIN = Path(sys.executable).parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
STRONG_KEY = secrets.token_hex(32)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def final_stage_env() -> dict[str, str]:
    """The ENV of the image's final stage."""
    env: dict[str, str] = {}
    for keyword, arguments in stages()[-1]:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def exec_form(arguments: str) -> list[str]:
    """A CMD/HEALTHCHECK CMD in JSON exec form."""
    command = json.loads(arguments)
    assert isinstance(command, list) and command, f"not in exec form: {arguments}"
    return command


def final_stage_copies() -> list[tuple[list[str], str]]:
    """``(sources, destination)`` of the final stage's COPY lines that take files from the build context."""
    copies = []
    for keyword, arguments in stages()[-1]:
        if keyword == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            copies.append((sources, destination))
    return copies


def test_dockerfile_is_a_slim_multi_stage_build_without_tensorflow():
    all_stages = stages()
    assert len(all_stages) >= 2, "multi-stage: dependencies are built apart from the final image"
    for stage in all_stages:
        image = stage[0][1].split()[0]
        assert image.startswith("python:3.11-slim"), image
    final = all_stages[-1]
    assert any(k == "COPY" and a.startswith("--from=") for k, a in final), "the final stage copies the venv"
    installs = " ".join(a for stage in all_stages for k, a in stage if k == "RUN" and "pip install" in a)
    assert "-r /tmp/requirements.txt" in installs and "requirements-train" not in installs
    assert "tensorflow" not in installs.lower()
    lines = [line.split("#")[0].strip().lower() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    packages = {re.split(r"[<>=\[;\s]", line)[0] for line in lines if line}
    assert not {name for name in packages if name.startswith(("tensorflow", "keras", "-r"))}, packages


def test_final_image_runs_as_a_user_with_a_healthcheck_and_the_port():
    final = stages()[-1]
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    env = final_stage_env()
    assert env["APP_ENV"] == "production" and env["BIND_HOST"] == "0.0.0.0" and env["MIGRATE_ON_START"] == "1"
    assert [a for k, a in final if k == "EXPOSE"] == [env["PORT"]]
    healthchecks = [a for k, a in final if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0] and "PORT" in healthchecks[0]
    cmd = exec_form([a for k, a in final if k == "CMD"][-1])
    assert cmd[0] == "gunicorn" and cmd[-1] == "wsgi:app" and "gunicorn.conf.py" in cmd


def test_image_gets_the_app_the_model_side_migrations_and_model_but_not_training():
    copied = {source.rstrip("/") for sources, _ in final_stage_copies() for source in sources}
    assert {"app", "inference", "migrations", "model_artifacts", "wsgi.py", "gunicorn.conf.py"} <= copied
    assert not any(source.startswith("training") for source in copied)
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
    allowed = {line[1:].strip().rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert copied | {"requirements.txt"} <= allowed, "the .dockerignore allow-list drops a copied path"
    default = REPO_ROOT / "model_artifacts" / "default"
    if default.is_symlink():  # COPY keeps links as they are: it must stay inside the copied folder
        target = os.readlink(default)
        assert not os.path.isabs(target) and ".." not in Path(target).parts, target


def assemble_image(target: Path) -> Path:
    """Lay out the final stage's files as the COPY lines would (working directory ``target``)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "model.keras")
    for sources, destination in final_stage_copies():
        for source in sources:
            origin = REPO_ROOT / source
            if origin.is_dir():
                if source.rstrip("/") == "model_artifacts":
                    continue  # the shipped model may still be training; the test serves its own
                shutil.copytree(origin, target / destination, ignore=ignore, symlinks=True)
            else:
                folder = target / destination if destination.endswith("/") else target
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, folder / (origin.name if destination.endswith("/") else destination))
    return target


def post_image(url: str, image: bytes, request_id: str) -> tuple[int, dict, dict]:
    """Multipart upload with the standard library; returns status, headers and the JSON body."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"red.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Request-ID": request_id})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), json.loads(response.read())


@contextlib.contextmanager
def image_server(color_artifact: Path, tmp_path: Path):
    """The CMD with the image's ENV, in a folder holding only what the Dockerfile copies, TensorFlow
    unimportable, as ``docker run`` starts it (2 workers x 2 threads, the image's size on 2 cores).

    Yields:
        ``(base URL, port, env, process)``; the process's output is collected when it stops.
    """
    root = assemble_image(tmp_path / "srv")
    no_tensorflow = tmp_path / "site"
    no_tensorflow.mkdir()
    (no_tensorflow / "sitecustomize.py").write_text(
        "import sys\nsys.modules['tensorflow'] = sys.modules['keras'] = None  # as in the image\n")
    port = free_port()
    env = {**os.environ, **final_stage_env(),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(no_tensorflow),
           "PORT": str(port), "BIND_HOST": "127.0.0.1",  # the test machine need not expose it
           "SECRET_KEY": STRONG_KEY, "MODEL_DIR": str(color_artifact),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'predictions.db'}",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
           "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2"}
    (tmp_path / "data").mkdir()
    cmd = exec_form([a for k, a in stages()[-1] if k == "CMD"][-1])
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/healthz", server, timeout=90)
        yield base, port, env, server
    finally:
        if server.poll() is None:
            server.terminate()
        server.output = server.communicate(timeout=30)


@pytest.mark.slow
def test_image_start_command_serves_from_the_copied_files(color_artifact, tmp_path, make_image):
    """Migrations run, /healthz answers, a prediction is stored, the HEALTHCHECK passes."""
    with image_server(color_artifact, tmp_path) as (base, _, env, server):
        status, headers, body = post_image(f"{base}/api/v1/predictions", make_image("red"), "deploy-test-1")
        assert status == 201 and body["predictions"][0]["label"] == "red"
        assert headers["X-Request-ID"] == "deploy-test-1"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        # Summed over both workers' files, whichever worker answered the scrape.
        assert 'car_classifier_predictions_total{label="red",source="api"} 1.0' in scraped
        healthcheck = exec_form([a for k, a in stages()[-1] if k == "HEALTHCHECK"][0].split("CMD", 1)[1])
        probe = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, probe.stderr
    stdout, stderr = server.output
    assert (tmp_path / "data" / "predictions.db").is_file()
    logs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert any(entry.get("request_id") == "deploy-test-1" and entry.get("status") == 201 for entry in logs), stdout
    assert "Traceback" not in stderr, stderr


@pytest.mark.slow
def test_the_image_alone_answers_health_checks_while_slow_clients_trickle(color_artifact, tmp_path, make_image):
    """No proxy in front: 8 clients trickling an upload body and 8 trickling their headers, one byte a
    second each (4 of either kind took the 2 x 2 threads of gunicorn's own threaded worker), and every
    health check is answered and an upload still succeeds meanwhile."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import cluster

    with image_server(color_artifact, tmp_path) as (base, port, _, server):
        with cluster.SlowClients(port, body=8, header=8) as slow, \
                cluster.HealthChecks(port, interval_s=0.5, timeout_s=3, slow=slow) as health:
            time.sleep(6)
            status, _, body = post_image(f"{base}/api/v1/predictions", make_image("red"), "during-slow-clients")
        assert health.statuses.count(200) == len(health.statuses) >= 8, f"statuses (0 = no answer): {health.statuses}"
        assert min(health.slow_open_during) == 16
        assert status == 201 and body["predictions"][0]["label"] == "red"
    assert "Traceback" not in server.output[1], server.output[1]


def test_app_yaml_runs_gunicorn_with_this_config_and_warmup():
    config = yaml.safe_load((REPO_ROOT / "app.yaml").read_text())
    assert config["runtime"] == "python312"
    program, *options = shlex.split(config["entrypoint"])
    assert program == "gunicorn"
    config_file = options[options.index("-c") + 1]
    assert (REPO_ROOT / config_file).is_file()
    module, _, attribute = options[-1].partition(":")
    assert (REPO_ROOT / f"{module}.py").is_file() and attribute == "app"
    assert config["instance_class"] in {"F1", "F2", "F4", "F4_1G"}
    assert "warmup" in config["inbound_services"]
    assert config["env_variables"]["APP_ENV"] == "production"
    for handler in config["handlers"]:
        if "static_dir" in handler:
            assert (REPO_ROOT / handler["static_dir"]).is_dir()


@pytest.mark.slow
def test_app_yaml_entrypoint_module_imports_with_its_env(color_artifact, tmp_path):
    """The entrypoint's module loads with app.yaml's variables, once SECRET_KEY is replaced as told."""
    yaml_env = {k: str(v) for k, v in yaml.safe_load((REPO_ROOT / "app.yaml").read_text())["env_variables"].items()}
    env = {**os.environ, **yaml_env, "MODEL_DIR": str(color_artifact),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'gae.db'}",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "not-made-yet")}
    script = "import wsgi; print(sorted(rule.rule for rule in wsgi.app.url_map.iter_rules()))"
    placeholder = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                                 text=True, timeout=120)
    assert placeholder.returncode == 1
    assert placeholder.stderr.strip().startswith("error: APP_ENV=production but SECRET_KEY")
    replaced = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env={**env, "SECRET_KEY": STRONG_KEY},
                              capture_output=True, text=True, timeout=120)
    assert replaced.returncode == 0, replaced.stderr
    assert "/_ah/warmup" in replaced.stdout


def test_gunicorn_listens_on_loopback_unless_told_or_on_a_platform(tmp_path):
    """Dev machines often run inside a container themselves: only explicit settings open the port."""
    script = """
import os, runpy
cases = [{}, {"GAE_ENV": "standard"}, {"K_SERVICE": "cars"}, {"BIND_HOST": "0.0.0.0"},
         {"BIND": "unix:/tmp/cars.sock"}]
for case in cases:
    for name in ("GAE_ENV", "K_SERVICE", "BIND_HOST", "BIND"):
        os.environ.pop(name, None)
    os.environ.update(case)
    print(runpy.run_path("gunicorn.conf.py")["bind"])
"""
    env = {key: value for key, value in os.environ.items()
           if key not in {"GAE_ENV", "K_SERVICE", "BIND_HOST", "BIND", "PROMETHEUS_MULTIPROC_DIR"}}
    env.update(PORT="8123", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["127.0.0.1:8123", "0.0.0.0:8123", "0.0.0.0:8123", "0.0.0.0:8123",
                                     "unix:/tmp/cars.sock"]


def readme_section(name: str) -> str:
    readme = manual_text()
    return readme.split(f"<!-- section:{name} -->")[1].split(f"<!-- /section:{name} -->")[0]


@pytest.mark.slow
def test_pythonanywhere_wsgi_file_from_the_readme_serves(color_artifact, tmp_path):
    """The WSGI file the README tells PythonAnywhere users to paste, with their paths filled in."""
    block = next(chunk.split("```")[0] for chunk in readme_section("deploy").split("```python\n")[1:]
                 if "application" in chunk.split("```")[0])
    database = tmp_path / "instance" / "predictions.db"
    database.parent.mkdir()
    wsgi_file = textwrap.dedent(block).replace(
        "/home/YOURNAME/car-classifier/instance/predictions.db", str(database)).replace(
        "/home/YOURNAME/car-classifier", str(REPO_ROOT))
    check = """
from sqlalchemy import text
from app.extensions import db
client = application.test_client()
print(client.get("/healthz").status_code, client.get("/readyz").status_code)
with application.app_context():
    print(db.session.execute(text("PRAGMA journal_mode")).scalar())
"""
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env["MODEL_DIR"] = str(color_artifact)
    as_pasted = subprocess.run([sys.executable, "-c", wsgi_file + check], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
    assert as_pasted.returncode == 1 and "SECRET_KEY is a placeholder" in as_pasted.stderr
    filled_in = wsgi_file.replace('SECRET_KEY="change-me"', f'SECRET_KEY="{STRONG_KEY}"')
    served = subprocess.run([sys.executable, "-c", filled_in + check], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    assert served.stdout.split()[-3:] == ["200", "200", "delete"]  # no WAL on PythonAnywhere's NFS


@pytest.mark.slow
def test_gunicorn_removes_its_metrics_folder_even_when_the_app_fails(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(TMPDIR=str(tmp_path), PORT="0", MODEL_DIR=str(tmp_path / "no-model"))
    result = subprocess.run([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "model artifact not found" in result.stderr
    assert not list(tmp_path.glob("car-classifier-metrics-*"))
