"""Which SSM document runs the deploy: the two built-in script documents, or a document of yours."""

from __future__ import annotations

import json
import re

from pipe.config.parsers import shown

SHELL = "AWS-RunShellScript"
POWERSHELL = "AWS-RunPowerShellScript"
SCRIPT_DOCUMENTS = (SHELL, POWERSHELL)
DOCUMENT_NAME = re.compile(r"[A-Za-z0-9_.\-:/]{3,256}")
DOCUMENT_VERSION = re.compile(r"\$DEFAULT|\$LATEST|[0-9]{1,10}")
RESERVED_PARAMETERS = ("commands", "executionTimeout")


def parse_document_parameters(text: str) -> dict[str, list[str]]:
    """``{"name": "value" | ["v1", "v2"]}`` -> SendCommand Parameters."""
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    except RecursionError:  # Python's JSON reader gives up on deep nesting (about 1,000 levels)
        raise ValueError('nests too deeply: give an object of strings or lists of strings, e.g. {"a": "b"}') from None
    if not isinstance(loaded, dict):
        raise ValueError('must be a JSON object like {"workingDirectory": "/srv/app"}')
    parameters: dict[str, list[str]] = {}
    for name, value in loaded.items():
        if isinstance(value, str):
            parameters[name] = [value]
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            parameters[name] = list(value)
        else:
            raise ValueError(f"{shown(name)} must be a string or a list of strings")
    return parameters


def plugin_folder(document: str) -> str:
    """The agent's output folder for the document's first step (S3 output layout)."""
    plugin = "awsrunPowerShellScript" if document == POWERSHELL else "awsrunShellScript"
    return f"{plugin}/0.{plugin}"
