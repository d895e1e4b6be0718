# syntax=docker/dockerfile:1
# The serving image: gunicorn + the Flask app + the LiteRT runtime + the default model. No TensorFlow.
#   docker build -t car-classifier .
#   docker run -p 8080:8080 -e SECRET_KEY=... -v car-data:/data car-classifier

# Build stage: compile-free wheels into a virtualenv that the final stage copies whole.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

# Final stage: no pip cache, no build files, a user without privileges.
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    BIND_HOST=0.0.0.0 \
    PORT=8080 \
    MIGRATE_ON_START=1 \
    DATABASE_URL=sqlite:////data/predictions.db \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN useradd --system --uid 10001 --user-group --home-dir /srv/app --shell /usr/sbin/nologin app \
    && mkdir -p /data /srv/app/instance \
    && chown app:app /data /srv/app/instance
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/app
COPY app/ app/
# The model side the app serves with: decoding, runtimes, gate, answers, heatmaps.
COPY inference/ inference/
COPY migrations/ migrations/
COPY model_artifacts/ model_artifacts/
COPY examples/ examples/
COPY wsgi.py gunicorn.conf.py ./
USER app
VOLUME ["/data"]
EXPOSE 8080
# slim has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]
# gunicorn.conf.py reads PORT and BIND_HOST, and runs the migrations first (MIGRATE_ON_START=1).
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
