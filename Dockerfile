# Tests build this on a local stand-in base (see scripts/build-test-base-image.sh).
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements.txt /requirements.txt
RUN python3 -m pip install --no-cache-dir -r /requirements.txt \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pipe

COPY pipe /pipe
COPY pipe.yml README.md LICENSE.txt /

# The pipe only reads the clone directory, so it needs no root.
USER 10001
ENTRYPOINT ["python3", "/pipe/pipe.py"]
