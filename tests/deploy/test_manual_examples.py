"""Every shell example of the manual (README.md and docs/*.md) runs as written.

The ``curl`` examples go to a live gunicorn serving the shipped model; the ``.venv/bin/flask`` examples run
against that server's database; the ``python -m training`` examples, most of which train for minutes on
data a clone does not have, are parsed by the real command line, so a renamed command or option fails
here. Only what a reader must change anyway is replaced: the host's port, and the sample prediction id
``Xq3v9R2cT8mKp0LwYbN4aA`` (by the id of a prediction the server just made). Placeholder photo names
(``car.jpg``, ``a.jpg`` ...) are real photos in the working folder, which links the repository's files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from gunicorn_support import running_gunicorn
from support import REPO_ROOT

# CI installs curl (.ci/run): there a missing curl fails instead of skipping, or the examples could rot.
pytestmark = pytest.mark.skipif(shutil.which("curl") is None and os.environ.get("CI") != "true",
                                reason="curl is not installed (apt-get install -y curl)")

SAMPLE_ID = "Xq3v9R2cT8mKp0LwYbN4aA"
MANUAL_HOST = "127.0.0.1:8000"
PASSWORD = "long secret"
# Photo names the examples use for "your photo"; the working folder has them.
PLACEHOLDER_FILES = {"car.jpg": "examples/audi-r8.jpg", "a.jpg": "examples/corvette.jpg",
                     "b.png": None, "photo.jpg": "examples/bmw-coupe.jpg"}


def manual_pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def shell_examples(text: str) -> list[tuple[str, int | None]]:
    """``(command, documented status)`` for each command of the ``bash`` blocks, continuation lines joined.

    The status is the ``# 201 ...`` comment right under a command, when there is one.
    """
    found = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            status = re.match(r"#\s*(\d{3})\b", line.strip())
            if status and found and found[-1][1] is None:
                found[-1] = (found[-1][0], int(status.group(1)))
            elif line.strip() and not line.lstrip().startswith("#"):
                found.append((line.strip(), None))
    return found


def examples(kind: str) -> list[tuple[str, str, int | None]]:
    """The manual's examples of one kind: ``curl``, ``flask`` or ``python``, as ``(page, command, status)``."""
    env = r"^(\w+=('[^']*'|\S+)\s+)*"  # VAR=value prefixes, quoted or not
    patterns = {"curl": r"^curl\s", "flask": env + r"(\.venv/bin/)?flask\s",
                "python": env + r"(\.venv/bin/)?python3? -m (?!venv|pip|pytest)"}
    chosen = []
    for page in manual_pages():
        for command, status in shell_examples(page.read_text(encoding="utf-8")):
            # A command may follow `cd` or a copy in one line; the example is its last part.
            last = command.split("&&")[-1].strip()
            if re.match(patterns[kind], last):
                chosen.append((page.relative_to(REPO_ROOT).as_posix(), last, status))
    return chosen


def test_the_extraction_finds_the_examples_it_must_run():
    assert {page for page, _, _ in examples("curl")} >= {"README.md", "docs/api.md", "docs/feedback.md",
                                                            "docs/answers.md"}
    assert any(command.startswith("ADMIN_PASSWORD=") for _, command, _ in examples("flask"))
    assert any("training train" in command for _, command, _ in examples("python"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder laid out like a fresh clone (the repository's files linked), plus the placeholder photos."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("clone")
    for entry in REPO_ROOT.iterdir():
        if entry.name not in {"instance", "data", ".git"}:
            (folder / entry.name).symlink_to(entry)
    for name, source in PLACEHOLDER_FILES.items():
        if source:
            shutil.copy(REPO_ROOT / source, folder / name)
        else:
            Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / name)
    (folder / "notes.txt").write_text("not a photo\n")
    # The gallery page teaches a make from a folder of photos.
    (folder / "tata").mkdir()
    for index, source in enumerate(("examples/honda-suv.jpg", "examples/ford-mustang.jpg", "examples/corvette.jpg")):
        shutil.copy(REPO_ROOT / source, folder / "tata" / f"{index}.jpg")
    return folder


@pytest.fixture(scope="module")
def server(workdir):
    with running_gunicorn(REPO_ROOT / "model_artifacts" / "default", workdir) as (served, database):
        yield served, database


def run_shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)


def test_every_curl_example_answers_as_documented(server, workdir):
    served, _ = server
    host = f"127.0.0.1:{served.port}"
    body = urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/api/v1/predictions", data=multipart("car.jpg", (workdir / "car.jpg").read_bytes()),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}), timeout=60).read()
    prediction_id = json.loads(body)["id"]
    ran = 0
    for page, command, status in examples("curl"):
        live = command.replace(MANUAL_HOST, host).replace(SAMPLE_ID, prediction_id)
        result = run_shell(f"{live} -s -o /dev/stderr -w '%{{http_code}}'", workdir, dict(os.environ))
        assert result.returncode == 0, f"{page}: {command}\n{result.stderr}"
        code = int(result.stdout.strip()[-3:])
        assert code == status if status else code < 400, f"{page}: {command} answered {code}\n{result.stderr}"
        ran += 1
    assert ran >= 4


def test_every_flask_example_runs_against_the_served_database(server, workdir):
    _, database = server
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "ADMIN_PASSWORD": PASSWORD,
           "MODEL_DIR": str(REPO_ROOT / "model_artifacts" / "default")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ran = 0
    for page, command, _ in examples("flask"):
        if "/home/YOURNAME/" in command:
            continue  # the PythonAnywhere page's paths are the reader's, on their host
        result = run_shell(command, workdir, env)
        assert result.returncode == 0, f"{page}: {command}\n{result.stdout}\n{result.stderr}"
        ran += 1
    assert ran >= 5


def test_every_training_example_parses_on_the_real_command_line():
    from training.cli import build_parser

    parser = build_parser()
    for page, command, _ in examples("python"):
        words = shlex.split(command.split("  #")[0])
        words = words[[i for i, word in enumerate(words) if word == "-m"][0] + 1:]
        module, arguments = words[0], [word for word in words[1:] if word not in {"|", ">"}]
        assert module == "training", f"{page}: {command}: no check for python -m {module}; add one here"
        try:
            parsed = parser.parse_args(arguments)
        except SystemExit as error:
            pytest.fail(f"{page}: {command}\nthe command line refused it (exit {error.code})")
        assert callable(parsed.handler)


BOUNDARY = "manual-examples-boundary"


def multipart(filename: str, data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_every_example_of_the_api_page_answers_with_its_sample_status(server, workdir):
    """``/api/docs`` shows a curl command and a sample response per operation; each command runs."""
    import html

    served, _ = server
    host = f"127.0.0.1:{served.port}"
    page = urllib.request.urlopen(f"http://{host}/api/docs", timeout=30).read().decode()
    requests = [html.unescape(text) for text in
                re.findall(r'class="[^"]*example-request"><code>(.*?)</code>', page, re.S)]
    statuses = [int(html.unescape(text)[:3]) for text in
                re.findall(r'class="[^"]*example-response"><code>(.*?)</code>', page, re.S)]
    assert len(requests) == len(statuses) >= 10
    body = urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/api/v1/predictions", data=multipart("car.jpg", (workdir / "car.jpg").read_bytes()),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}), timeout=60).read()
    prediction_id = json.loads(body)["id"]  # a prediction of its own: one feedback per address and photo
    for command, status in zip(requests, statuses):
        assert f"http://{host}/" in command  # written for the address the page was read from
        live = command.replace(SAMPLE_ID, prediction_id)
        result = run_shell(f"{live} -o /dev/null -w '%{{http_code}}'" if " -o " not in live
                           else f"{live} -w '%{{http_code}}'", workdir, dict(os.environ))
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        assert int(result.stdout.strip()[-3:]) == status, f"{command} answered {result.stdout[-3:]}"
