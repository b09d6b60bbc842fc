# flowmon worker image: `flowmon worker` (default), or any other flowmon command:
#   docker run --rm flowmon:0.1.0 config dump
#   docker compose run --rm cli produce samples.jsonl
#
# Layout: the package is installed *editable* from /opt/flowmon, so /opt/flowmon/pipeline
# and /opt/flowmon/schemas stay side by side. pipeline/config.py finds the schemas as
# <parent of the pipeline package>/schemas (SCHEMAS_DIR): a plain `pip install .` would put
# pipeline/ in site-packages without schemas/ next to it, and migrations/validation would
# not find their files.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLOWMON_DATA_DIR=/var/lib/flowmon

WORKDIR /opt/flowmon

# Dependencies first (their layer is reused while only the code changes): install the
# project with a placeholder package, then put the real code in place.
COPY pyproject.toml README.md ./
RUN mkdir pipeline && touch pipeline/__init__.py \
    && pip install -e . \
    && rm -rf pipeline flowmon.egg-info

COPY pipeline/ ./pipeline/
COPY schemas/ ./schemas/
# Re-register the editable install against the real tree (no dependency resolution).
RUN pip install --no-deps -e . \
    && flowmon --help > /dev/null \
    && python -c "from pipeline.config import SCHEMAS_DIR; assert (SCHEMAS_DIR / 'clickhouse').is_dir(), SCHEMAS_DIR"

# Unprivileged user; worker state (Faust data) under FLOWMON_DATA_DIR.
RUN useradd --system --uid 10001 --home-dir /var/lib/flowmon --shell /usr/sbin/nologin flowmon \
    && mkdir -p /var/lib/flowmon \
    && chown flowmon /var/lib/flowmon
USER flowmon

# Prometheus /metrics when FLOWMON_METRICS_PORT=9108 (docker-compose.yml sets it).
EXPOSE 9108

ENTRYPOINT ["flowmon"]
CMD ["worker"]
