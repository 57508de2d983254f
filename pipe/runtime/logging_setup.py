"""Logging for the build log: one stream, secrets masked, AWS SDK chatter kept out even in debug."""

from __future__ import annotations

import io
import logging
import sys

from pipe.runtime.redaction import RedactingFilter, Redactor

# botocore logs request and response bodies at DEBUG, which include STS temporary credentials and
# decrypted parameter values: these loggers stay at WARNING whatever DEBUG says.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def configure_logging(logger: logging.Logger, redactor: Redactor, debug: bool) -> None:
    """Send the toolkit's (root) logger to stdout with masking, so log lines and output keep order."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stdout)
        handler.addFilter(RedactingFilter(redactor))
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
