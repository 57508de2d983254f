"""Secrets pinned to the version read before sending (pipe/plan/pinned.py)."""

from __future__ import annotations

from pipe.model import SecretRef
from pipe.plan.pinned import pinned, pins_of

ARN = "arn:aws:ssm:eu-west-1:123456789012:parameter/deploy/prod/db"


def test_a_name_and_its_arn_are_pinned_to_the_version_read() -> None:
    pins = pins_of([{"Name": "/deploy/prod/db", "ARN": ARN, "Version": 7, "Value": "x"}])
    assert pins == {"/deploy/prod/db": "/deploy/prod/db:7", ARN: f"{ARN}:7"}


def test_a_label_becomes_the_version_it_named_and_a_version_stays() -> None:
    secrets = [SecretRef("LIVE", "/deploy/prod/db:live"), SecretRef("THIRD", "/deploy/prod/db:3")]
    answers = [
        {"Name": "/deploy/prod/db", "Selector": ":live", "Version": 4},
        {"Name": "/deploy/prod/db", "Selector": ":3", "Version": 3},
    ]
    assert pinned(secrets, pins_of(answers)) == [
        SecretRef("LIVE", "/deploy/prod/db:4"),
        SecretRef("THIRD", "/deploy/prod/db:3"),
    ]


def test_a_plain_reference_is_pinned_to_the_newest_version_whatever_answer_lacks_its_selector() -> None:
    """An answer for ``name:1`` or ``name:live`` without its Selector cannot pin ``name`` to an older
    version: the plain read is the newest, the highest of all; an unnamed label stays as given."""
    secrets = [SecretRef("NOW", "/deploy/prod/db"), SecretRef("LIVE", "/deploy/prod/db:live"), SecretRef("ARN", ARN)]
    answers = [
        {"Name": "/deploy/prod/db", "ARN": ARN, "Version": 1},
        {"Name": "/deploy/prod/db", "ARN": ARN, "Version": 5},
        {"Name": "/deploy/prod/db", "ARN": ARN, "Version": 2},
    ]
    assert pinned(secrets, pins_of(answers)) == [
        SecretRef("NOW", "/deploy/prod/db:5"),
        SecretRef("LIVE", "/deploy/prod/db:live"),
        SecretRef("ARN", f"{ARN}:5"),
    ]


def test_an_answer_without_a_version_pins_nothing_and_the_reference_is_sent_as_given() -> None:
    secrets = [SecretRef("DB", "/deploy/prod/db"), SecretRef("API", "/deploy/prod/api")]
    pins = pins_of([{"Name": "/deploy/prod/db"}, {"Name": "/deploy/prod/api", "Version": 2}])
    assert pinned(secrets, pins) == [SecretRef("DB", "/deploy/prod/db"), SecretRef("API", "/deploy/prod/api:2")]
