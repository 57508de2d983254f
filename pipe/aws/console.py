"""Links to a command in the AWS Management Console, on the console of the region's partition.

Each partition has its own console: the commercial one is regional
(``https://eu-west-1.console.aws.amazon.com/...``); AWS GovCloud (US) signs in at
``https://console.amazonaws-us-gov.com`` and the China regions at ``https://console.amazonaws.cn``
(the forms AWS's own guides link to, with ``?region=``). The partition comes from botocore's
partition data, so a new region of a known partition needs no change here.
"""

from __future__ import annotations

import re
from functools import lru_cache

from botocore.loaders import create_loader

DEFAULT_PARTITION = "aws"  # what botocore's endpoint rules assume for a region it does not know
CONSOLES = {
    "aws": "https://{region}.console.aws.amazon.com",
    "aws-us-gov": "https://console.amazonaws-us-gov.com",
    "aws-cn": "https://console.amazonaws.cn",
}


@lru_cache(maxsize=1)
def _partitions() -> tuple[tuple[str, frozenset[str], re.Pattern[str]], ...]:
    data = create_loader().load_data("partitions")
    return tuple(
        (str(part["id"]), frozenset(part.get("regions", {})), re.compile(str(part["regionRegex"])))
        for part in data["partitions"]
    )


def partition_of(region: str) -> str:
    """``aws``, ``aws-us-gov``, ``aws-cn``, ... for ``region``: listed regions first, then the patterns."""
    for partition, regions, _ in _partitions():
        if region in regions:
            return partition
    for partition, _, pattern in _partitions():
        if pattern.match(region):
            return partition
    return DEFAULT_PARTITION


def console_url(region: str, command_id: str) -> str | None:
    """The Run Command page of ``command_id``; None in a partition whose console has no public address
    (the ISO partitions, or one newer than this code): a wrong link is worse than none."""
    console = CONSOLES.get(partition_of(region))
    if console is None:
        return None
    return f"{console.format(region=region)}/systems-manager/run-command/{command_id}?region={region}"


def console_urls(region: str, command_ids: list[str]) -> str:
    """The links for a message, or where to look when the partition has no known console."""
    urls = [url for url in (console_url(region, command_id) for command_id in command_ids) if url]
    return " ".join(urls) if urls else f"Run Command in the {region} console"
