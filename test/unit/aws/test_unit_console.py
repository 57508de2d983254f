"""pipe.aws.console: links to a command on the console of its region's partition."""

from __future__ import annotations

import pytest

from pipe.aws.console import console_url, console_urls, partition_of
from unit.unit_support import COMMAND_ID

PAGE = f"/systems-manager/run-command/{COMMAND_ID}"


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("eu-west-1", f"https://eu-west-1.console.aws.amazon.com{PAGE}?region=eu-west-1"),
        ("ap-southeast-4", f"https://ap-southeast-4.console.aws.amazon.com{PAGE}?region=ap-southeast-4"),
        ("us-gov-west-1", f"https://console.amazonaws-us-gov.com{PAGE}?region=us-gov-west-1"),
        ("us-gov-east-1", f"https://console.amazonaws-us-gov.com{PAGE}?region=us-gov-east-1"),
        ("cn-north-1", f"https://console.amazonaws.cn{PAGE}?region=cn-north-1"),
        ("cn-northwest-1", f"https://console.amazonaws.cn{PAGE}?region=cn-northwest-1"),
    ],
)
def test_console_url_is_on_the_console_of_the_regions_partition(region: str, expected: str) -> None:
    assert console_url(region, COMMAND_ID) == expected


@pytest.mark.parametrize(
    ("region", "partition"),
    [("eu-south-9", "aws"), ("us-gov-north-7", "aws-us-gov"), ("cn-south-5", "aws-cn"), ("us-iso-east-1", "aws-iso")],
)
def test_a_region_botocore_does_not_list_yet_gets_its_partition_from_the_name(region: str, partition: str) -> None:
    assert partition_of(region) == partition


def test_no_link_where_the_partition_has_no_public_console() -> None:
    assert console_url("us-iso-east-1", COMMAND_ID) is None
    assert console_urls("us-iso-east-1", [COMMAND_ID]) == "Run Command in the us-iso-east-1 console"
    assert console_urls("cn-north-1", [COMMAND_ID, COMMAND_ID]).count("https://console.amazonaws.cn/") == 2
