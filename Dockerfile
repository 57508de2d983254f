# Tests build this on a local stand-in base (see scripts/build-test-base-image.sh).
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements.txt /requirements.txt
RUN python3 -m pip install --no-cache-dir -r /requirements.txt

COPY pipe /pipe
# Each run is a new container, and PYTHONDONTWRITEBYTECODE keeps it from writing bytecode: compiled
# once here, every run loads /pipe's bytecode instead of compiling its modules again (~0.1 s of CPU).
RUN python3 -m compileall -q /pipe
COPY pipe.yml README.md LICENSE.txt /

# Runs as root like Bitbucket's own pipes: it writes RESULT_FILE into the clone directory,
# which Bitbucket mounts owned by root.
ENTRYPOINT ["python3", "/pipe/pipe.py"]
