"""Small parsers for pipe variable values. Each raises ValueError with a message for the user.

Messages quote a value with ``shown`` and list several with ``listed``: a 120 KB value or 6,000
instance ids are cut, so a refusal stays readable in the build log.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

from pipe.config.env_names import name_problem
from pipe.limits import MAX_TARGET_VALUES, MAX_TARGETS
from pipe.model import SecretRef, Target

SHOWN_CHARS = 80  # of a quoted value
SHOWN_ITEMS = 10  # of a list of values (ids, entries)

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", ""}
# {{environment}} is the escape for a literal {environment}; ${name} is shell syntax, never ours
_PLACEHOLDER = re.compile(r"(?P<escaped>\{\{environment\}\})|(?<!\$)\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")

MAX_TAG_KEY = 128  # AWS tag keys
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}|i-[0-9a-f]{17}|mi-[0-9a-f]{17}")  # mi-: hybrid (on-premises) nodes
# botocore's SSM model, TargetKey: ^[\p{L}\p{Z}\p{N}_.:/=\-@]*$ (AWS tags also allow '+'; SSM targets do not)
TAG_KEY_PUNCTUATION = "_.:/=-@"
RATE = re.compile(r"([0-9]{1,5})(%?)")
PLAIN_KEYS = ("tag-key", "resource-groups:Name", "resource-groups:ResourceTypeFilters", "InstanceIds")

# Parameter Store: names are letters, digits and . _ - in at most 15 /-separated levels; a name or an
# ARN (parameters shared from another account must be read by ARN) may end in :version or :label
_LEVEL = r"[A-Za-z0-9_.\-]+"
_PARAMETER_PATH = rf"(?:/{_LEVEL}){{1,15}}|{_LEVEL}"
_PARAMETER_ARN = rf"arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{{12}}:parameter(?:/{_LEVEL}){{1,15}}"
# a version, or a label: up to 100 of letters, digits and . _ -, not starting with a digit, "aws" or "ssm"
_SELECTOR = r"[0-9]{1,10}|(?![aA][wW][sS]|[sS][sS][mM])[A-Za-z_.\-][A-Za-z0-9_.\-]{0,99}"
PARAMETER_REFERENCE = re.compile(rf"(?:{_PARAMETER_ARN}|{_PARAMETER_PATH})(?::(?:{_SELECTOR}))?")
MAX_PARAMETER_REFERENCE = 2048  # ssm:GetParameters PSParameterName


# --- how messages show values --------------------------------------------------------------------


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with an ellipsis and the full length."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[: limit - 1] + '…'!r} ({len(value):,} characters)"


def listed(values: Iterable[str], limit: int = SHOWN_ITEMS, quote: bool = True) -> str:
    """``'a', 'b', ... and 5,990 more``: at most ``limit`` values, each cut by ``shown``."""
    items = list(values)
    text = ", ".join(shown(value) if quote else value for value in items[:limit])
    return text + (f" and {len(items) - limit:,} more" if len(items) > limit else "")


# --- scalars -------------------------------------------------------------------------------------


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"must be true or false, got {shown(text)}")


def parse_int(text: str, minimum: int, maximum: int, unit: str = "seconds") -> int:
    """A whole number from ``minimum`` to ``maximum``; ``unit`` names it in messages ("" for a count)."""
    stripped = text.strip()
    of_unit = f" {unit}" if unit else ""
    if not re.fullmatch(r"[0-9]+", stripped):
        kind = f"a whole number of{of_unit}" if unit else "a whole number"
        raise ValueError(f"must be {kind} from {minimum} to {maximum}, got {shown(text)}")
    if len(stripped.lstrip("0")) > len(str(maximum)):  # before int(): Python refuses 4,300+ digits itself
        raise ValueError(f"must be from {minimum} to {maximum}{of_unit}, got a {len(stripped):,}-digit number")
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise ValueError(f"must be from {minimum} to {maximum}{of_unit}, got {value}")
    return value


def parse_rate(text: str, *, minimum: int) -> str:
    """A count (``10``) or a percentage (``10%``) of the targets, as SendCommand takes them."""
    match = RATE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"must be a number like 10 or a percentage like 10%, got {shown(text)}")
    number, percent = int(match.group(1)), match.group(2)
    if percent and not minimum <= number <= 100:
        raise ValueError(f"must be from {minimum}% to 100%, got {text.strip()}")
    if not percent and number < minimum:
        raise ValueError(f"must be at least {minimum}, got {number}")
    return f"{number}{percent}"


# --- lists ---------------------------------------------------------------------------------------


def split_words(text: str) -> list[str]:
    """Split on spaces, commas, semicolons and newlines; drop empty parts."""
    return [part for part in re.split(r"[\s,;]+", text) if part]


def yaml_list(env: Mapping[str, str], name: str) -> list[str] | None:
    """Read a YAML list the way Bitbucket passes it to a pipe: NAME_COUNT and NAME_0..n."""
    count_text = env.get(f"{name}_COUNT")
    if count_text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,4}", count_text.strip()):
        raise ValueError(f"{name}_COUNT must be a number below 10000, got {shown(count_text, 20)}")
    items = []
    for index in range(int(count_text)):
        item = env.get(f"{name}_{index}")
        if item is None:
            raise ValueError(f"{name}_COUNT is {count_text} but {name}_{index} is missing")
        items.append(item)
    return items


def split_pairs(text: str) -> list[tuple[str, str]]:
    """``NAME=value`` entries, one per line; blank lines and lines starting with ``#`` are skipped.

    Only a newline separates entries: the value is the rest of its line after the first ``=``,
    ``;``, ``=``, ``#``, quotes and braces included. A value often comes from a variable the pipe never
    sees (``BRANCH=$BITBUCKET_BRANCH`` is expanded by Bitbucket), and a ``;`` inside it must not start
    a new entry, whose name would then be data. Git refuses control characters in branch and tag
    names, so a newline cannot come from there. Spaces around the name and the value are dropped.
    """
    pairs = []
    for raw in text.split("\n"):
        entry = raw.strip()
        if entry and not entry.startswith("#"):
            name, value = _entry(entry)
            pairs.append((name, value.strip()))
    return pairs


def list_pairs(items: Iterable[str]) -> list[tuple[str, str]]:
    """The YAML list form (``NAME_COUNT``, ``NAME_0``..): one entry per item, its value kept exactly as
    given after the first ``=`` (spaces and newlines too). Blank items and ``#`` items are skipped."""
    return [_entry(item) for item in items if item.strip() and not item.lstrip().startswith("#")]


def _entry(entry: str) -> tuple[str, str]:
    name, sep, value = entry.partition("=")
    if not sep:
        raise ValueError(f"entry {shown(entry.strip(), 60)} has no '=': write NAME=value")
    problem = name_problem(name.strip())
    if problem:
        raise ValueError(problem)
    return name.strip(), value


_FORMER_SEPARATOR = re.compile(r";\s*([A-Za-z_][A-Za-z0-9_]*)=")


def former_separator_hints(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Warnings for values that hold ``;NAME=``: up to 1.x such a ``;`` started a new entry."""
    return [
        f"VARIABLES: the value of {name} holds ';{match.group(1)}=' and is kept whole: only a newline "
        "separates entries (a ';' no longer does). If you meant several variables, put each on its own line"
        for name, value in pairs
        if (match := _FORMER_SEPARATOR.search(value))
    ]


_CR_AT_LINE_END = re.compile(r"\r(?=\n)|\r\Z")


def unix_line_endings(text: str) -> str:
    """CRLF (a script saved on Windows) as LF, a CR left at the very end included: ``exit 0\\r`` is an
    error in every POSIX shell."""
    return _CR_AT_LINE_END.sub("", text)


# --- {environment} -------------------------------------------------------------------------------


def expand_environment(text: str, environment: str | None, *, others: str = "refuse") -> str:
    """Replace ``{environment}`` (``{{environment}}`` stays a literal ``{environment}``).

    ``others="refuse"`` refuses any other ``{name}`` (a typo of the placeholder, in a value that
    cannot hold braces anyway); ``others="keep"`` leaves it alone (free text such as VARIABLES).
    """
    unknown: list[str] = []
    used = False

    def replace(match: re.Match[str]) -> str:
        nonlocal used
        if match.group("escaped"):
            return "{environment}"
        name = match.group("name")
        if name == "environment":
            used = True
            return environment or ""
        if others == "refuse":
            unknown.append("{" + name + "}")
        return match.group(0)

    expanded = _PLACEHOLDER.sub(replace, text)
    if unknown:
        raise ValueError(
            f"unknown placeholder {listed(sorted(set(unknown)), quote=False)}: only {{environment}} is supported"
        )
    if used and not environment:
        raise ValueError(
            "uses {environment} but no environment is known: set ENVIRONMENT or run the pipe in a deployment step"
        )
    return expanded


# --- values of particular variables --------------------------------------------------------------


def parse_instance_ids(items: Iterable[str]) -> list[str]:
    """Instance ids (each item may hold several, separated by spaces, commas, semicolons or
    newlines), duplicates dropped in order; [] when none is given."""
    ids = [word for item in items for word in split_words(item)]
    bad = [word for word in ids if not INSTANCE_ID.fullmatch(word)]
    if bad:
        verb = "is not an instance id" if len(bad) == 1 else "are not instance ids"
        raise ValueError(
            f"{listed(bad)} {verb} (expected i- followed by 8 or 17 hex digits, or mi- and 17 for hybrid nodes)"
        )
    return list(dict.fromkeys(ids))


def parse_targets(entries: Iterable[str]) -> list[Target]:
    """``tag:Service=api`` entries (one per item; within an item, newlines and ``;`` also separate)
    -> SendCommand Targets."""
    targets: list[Target] = []
    for raw in (part for entry in entries for part in re.split(r"[\n;]", entry)):
        entry = raw.strip()
        if entry:
            target = _parse_target(entry)
            if any(existing.key == target.key for existing in targets):
                raise ValueError(f"{target.key} is given twice: put all its values in one entry, separated by commas")
            targets.append(target)
    if not targets:
        raise ValueError("is empty: give targets like tag:Service=api;tag:Env=prod")
    if len(targets) > MAX_TARGETS:
        raise ValueError(f"has {len(targets)} entries; SSM takes at most {MAX_TARGETS}")
    return targets


def _parse_target(entry: str) -> Target:
    key, sep, values_text = entry.partition("=")
    key = key.strip()
    values = [v for v in (part.strip() for part in values_text.split(",")) if v]
    if not sep or not values:
        raise ValueError(f"entry {shown(entry)} must be KEY=value[,value...], e.g. tag:Service=api")
    if key.startswith("tag:"):
        problem = tag_key_problem(key[4:])
        if problem:
            raise ValueError(f"{shown(key)} is not a tag key SSM can target: {problem}")
    elif key not in PLAIN_KEYS:
        raise ValueError(
            f"unknown target key {shown(key)}: use tag:<TagKey>, tag-key, resource-groups:Name or InstanceIds"
        )
    if key == "InstanceIds":
        values = [word for value in values for word in split_words(value)]
        bad = [value for value in values if not INSTANCE_ID.fullmatch(value)]
        if bad:
            raise ValueError(f"InstanceIds: {listed(bad)} not instance ids (i- and 8 or 17 hex digits, or mi- and 17)")
    if len(values) > MAX_TARGET_VALUES:
        raise ValueError(f"{key} has {len(values)} values; SSM takes at most {MAX_TARGET_VALUES} per target")
    return Target(key, tuple(values))


def tag_key_problem(key: str) -> str | None:
    """Why SSM cannot target the tag key (letters, numbers and spaces of any script, and _ . : / = - @)."""
    if not 1 <= len(key) <= MAX_TAG_KEY:
        return f"a tag key has 1 to {MAX_TAG_KEY} characters, this one {len(key):,}"
    bad = sorted({c for c in key if unicodedata.category(c)[0] not in "LNZ" and c not in TAG_KEY_PUNCTUATION})
    if bad:
        return f"it may hold letters, numbers, spaces and {' '.join(TAG_KEY_PUNCTUATION)}, not {listed(bad)}"
    return None


def parse_secret_refs(pairs: Iterable[tuple[str, str]]) -> list[SecretRef]:
    """``NAME=/parameter`` pairs -> SecretRefs; each name once, each parameter a name or ARN."""
    refs: list[SecretRef] = []
    for name, parameter in pairs:
        if len(parameter) > MAX_PARAMETER_REFERENCE or not PARAMETER_REFERENCE.fullmatch(parameter):
            raise ValueError(
                f"{name}: {shown(parameter)} is not a Parameter Store name (letters, digits and . _ -, in "
                "/-separated levels, e.g. /deploy/prod/db_password), an ARN "
                "(arn:aws:ssm:<region>:<account>:parameter/<name>), or one of them with :<version> or :<label>"
                + (" ({environment} is the only placeholder)" if "{" in parameter else "")
            )
        if any(ref.env_name == name for ref in refs):
            raise ValueError(f"{name} is given twice")
        refs.append(SecretRef(name, parameter))
    return refs


def unique_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """VARIABLES: each name once."""
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{listed(twice, quote=False)} given twice")
    return pairs
