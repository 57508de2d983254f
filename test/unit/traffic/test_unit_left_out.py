"""The record of what a deploy took out of service (``pipe/traffic/left_out.py``): read back as written,
small enough for a standard parameter with a large batch."""

from __future__ import annotations

from pipe.traffic.left_out import Target, decode, encode

ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-api-prod-blue/0123456789abcdef"
STANDARD_PARAMETER_MAX = 4096  # characters of a standard-tier Parameter Store value


def test_a_record_reads_back_as_written() -> None:
    targets = [
        (ARN, "web-api-prod-blue", "i-0123456789abcdef0", None, None),
        (ARN, "web-api-prod-blue", "i-1", 8080, None),
        (ARN + "-ip", "web-api-prod-ip", "10.0.1.12", 3000, "all"),  # an ip target with its zone
        (ARN + "-ip", "web-api-prod-ip", "2001:db8::12", 3000, None),  # an IPv6 address holds colons
    ]
    suspended = {"web-api-asg": ["AZRebalance", "HealthCheck"]}

    build, read, held = decode(encode("https://bitbucket.org/acme/web-api/pipelines/results/42", targets, suspended))

    assert build == "https://bitbucket.org/acme/web-api/pipelines/results/42"
    assert sorted(read, key=str) == sorted(targets, key=str)
    assert held == suspended


def test_a_batch_of_a_hundred_instances_in_two_groups_fits_a_standard_parameter() -> None:
    instances = [f"i-{n:017x}" for n in range(100)]
    targets: list[Target] = [
        (ARN + suffix, f"web-api-prod{suffix}", i, None, None) for suffix in ("", "-admin") for i in instances[:50]
    ]
    targets += [(ARN, "web-api-prod", i, None, None) for i in instances[50:]]
    value = encode(
        "https://bitbucket.org/acme/web-api/pipelines/results/12345", targets, {"web-api-asg": ["HealthCheck"]}
    )

    assert len(value) <= STANDARD_PARAMETER_MAX
