"""S3's REST requests named by their API operation (PutObject, UploadPart, HeadObject, ...).

S3 is a REST API: an operation is a method, a path with or without a key, literal query-string
names (``?uploads``, ``?list-type=2``) and required query or header members (``uploadId``,
``x-amz-copy-source``): each operation's "Request Syntax" in the S3 API Reference, which botocore's
service model carries as ``http.requestUri`` and the input members' locations. moto routes S3
without naming the operation, so the stand-in names each request from that model (the most
specific operation the request satisfies) and counts S3 calls under those names, like the other
services' (``s3:PutObject``): a single upload is told from a multipart one, a HEAD from a download.
"""

from __future__ import annotations

import functools
from collections.abc import Set
from dataclasses import dataclass

import botocore.session

# Operations whose requests look the same as another's (same method, path and required members):
# the one named when both match.
PREFERRED = frozenset({"ListBuckets"})  # rather than ListDirectoryBuckets (S3 Express)


@dataclass(frozen=True)
class RequestShape:
    """What a request of one operation always has."""

    name: str
    method: str
    has_bucket: bool
    has_key: bool
    query: frozenset[str]  # literal query names of the request URI and required query members
    headers: frozenset[str]  # required header members, lower case

    def matches(self, method: str, has_bucket: bool, has_key: bool, query: Set[str], headers: Set[str]) -> bool:
        return (
            (self.method, self.has_bucket, self.has_key) == (method, has_bucket, has_key)
            and self.query <= query
            and self.headers <= headers
        )

    def specificity(self) -> tuple[int, bool, str]:
        return len(self.query) + len(self.headers), self.name in PREFERRED, self.name


@functools.cache
def request_shapes() -> tuple[RequestShape, ...]:
    """Every current (not deprecated) S3 operation of botocore's model."""
    model = botocore.session.get_session().get_service_model("s3")
    shapes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        if operation.deprecated:
            continue
        path, _, literal = str(operation.http["requestUri"]).partition("?")
        query = {part.split("=", 1)[0] for part in literal.split("&") if part}
        headers = set()
        members = operation.input_shape.members if operation.input_shape else {}
        required = operation.input_shape.required_members if operation.input_shape else []
        for member in required:
            location = members[member].serialization.get("location")
            wire_name = str(members[member].serialization.get("name", member))
            if location == "querystring":
                query.add(wire_name)
            elif location == "header":
                headers.add(wire_name.lower())
        shapes.append(
            RequestShape(
                name=name,
                method=str(operation.http["method"]),
                has_bucket="{Bucket}" in path,
                has_key="{Key+}" in path,
                query=frozenset(query),
                headers=frozenset(headers),
            )
        )
    return tuple(shapes)


def operation(method: str, has_bucket: bool, has_key: bool, query: Set[str], headers: Set[str]) -> str:
    """The S3 operation of a request (``query``: its query-string names; ``headers``: its header
    names in lower case); ``"Unknown<METHOD>"`` when no operation of the model fits."""
    method = method.upper()
    fitting = [shape for shape in request_shapes() if shape.matches(method, has_bucket, has_key, query, headers)]
    if not fitting:
        return f"Unknown{method}"
    return max(fitting, key=RequestShape.specificity).name
