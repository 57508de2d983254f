"""Credentials: static keys or Bitbucket OIDC, then the per-environment deploy role."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import get_session

from pipe.aws.errors import client_config, error_code, error_message, is_access_denied
from pipe.config.settings import DeploySettings
from pipe.errors import PipeError
from pipe.runtime.redaction import Redactor

ROLE_DURATION_SECONDS = 3600  # the most a chained role session may last; refreshed when it runs out
log = logging.getLogger("ssm-deploy")


@dataclass(frozen=True)
class Identity:
    arn: str
    account: str


def authenticate(
    settings: DeploySettings, env: Mapping[str, str], redactor: Redactor
) -> tuple[boto3.Session, Identity]:
    """Return a session for the deploy (the environment's role when ROLE_ARN is set) and who it is."""
    base = _base_session(settings, env, redactor)
    caller = _identity(base, settings.region, "the pipe's credentials")
    if settings.role_arn is None:
        log.info(f"Authenticated as {caller.arn} (account {caller.account})")
        return base, caller
    log.info(f"Assuming deploy role {settings.role_arn} from {caller.arn}")
    session = _assumed_role_session(base, settings, caller, redactor)
    identity = _identity(session, settings.region, "the deploy role")
    log.info(f"Deploying as {identity.arn} (account {identity.account})")
    return session, identity


def _base_session(settings: DeploySettings, env: Mapping[str, str], redactor: Redactor) -> boto3.Session:
    if settings.oidc_role_arn:
        token = env.get("BITBUCKET_STEP_OIDC_TOKEN", "").strip()
        if token:
            return _oidc_session(settings, token, redactor)
        log.warning(
            "AWS_OIDC_ROLE_ARN is set but BITBUCKET_STEP_OIDC_TOKEN is missing: add `oidc: true` "
            "to the step to use OpenID Connect. Falling back to AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
        )
    keys = settings.static_keys
    if keys is not None:
        redactor.add(keys.secret_access_key)
        redactor.add(keys.session_token)
        return boto3.Session(
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token,
            region_name=settings.region,
        )
    session = boto3.Session(region_name=settings.region)
    if session.get_credentials() is None:
        raise PipeError(
            "No AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_OIDC_ROLE_ARN "
            "with `oidc: true` on the step."
        )
    return session


def _oidc_session(settings: DeploySettings, token: str, redactor: Redactor) -> boto3.Session:
    redactor.add(token)
    log.info("Authenticating with a OpenID Connect (OIDC) Web Identity Provider")
    sts = boto3.Session().client(
        "sts", region_name=settings.region, config=client_config().merge(Config(signature_version=UNSIGNED))
    )
    try:
        response = sts.assume_role_with_web_identity(
            RoleArn=str(settings.oidc_role_arn),
            RoleSessionName=settings.build.session_name(),
            WebIdentityToken=token,
        )
    except ClientError as error:
        raise PipeError(
            f"AWS_OIDC_ROLE_ARN: could not assume {settings.oidc_role_arn} with the step's OIDC token "
            f"({error_code(error)}: {error_message(error)}). Check that the role trusts the Bitbucket "
            "OIDC identity provider of this workspace and that its audience and conditions match."
        ) from None
    except BotoCoreError as error:
        raise PipeError(f"Could not reach AWS STS for OIDC: {error}") from None
    credentials = response["Credentials"]
    redactor.add(credentials["SecretAccessKey"])
    redactor.add(credentials["SessionToken"])
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=settings.region,
    )


def _assumed_role_session(
    base: boto3.Session, settings: DeploySettings, caller: Identity, redactor: Redactor
) -> boto3.Session:
    sts = base.client("sts", region_name=settings.region, config=client_config())
    request: dict[str, Any] = {
        "RoleArn": settings.role_arn,
        "RoleSessionName": settings.build.session_name(),
        "DurationSeconds": ROLE_DURATION_SECONDS,
    }
    if settings.external_id:
        request["ExternalId"] = settings.external_id

    def fetch() -> dict[str, str]:
        try:
            credentials = sts.assume_role(**request)["Credentials"]
        except ClientError as error:
            fix = (
                f"the trust policy of {settings.role_arn} must allow sts:AssumeRole for {caller.arn}"
                + (" with this EXTERNAL_ID" if settings.external_id else "")
                + f", and {caller.arn} needs sts:AssumeRole on that role"
            )
            raise PipeError(
                f"ROLE_ARN: could not assume {settings.role_arn} ({error_code(error)}: "
                f"{error_message(error)}). Fix: {fix}."
            ) from None
        redactor.add(credentials["SecretAccessKey"])
        redactor.add(credentials["SessionToken"])
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    refreshable = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    core = get_session()
    core._credentials = refreshable  # type: ignore[attr-defined] # the documented way to hand botocore auto-refreshing credentials
    return boto3.Session(botocore_session=core, region_name=settings.region)


def _identity(session: boto3.Session, region: str, whose: str) -> Identity:
    try:
        response = session.client("sts", region_name=region, config=client_config()).get_caller_identity()
    except ClientError as error:
        if error_code(error) in {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"} or (
            is_access_denied(error)
        ):
            raise PipeError(
                f"AWS rejected {whose} ({error_code(error)}: {error_message(error)}). Check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the OIDC role) and that they are active."
            ) from None
        raise
    except BotoCoreError as error:
        raise PipeError(f"Could not reach AWS STS to check {whose}: {error}") from None
    return Identity(arn=response["Arn"], account=response["Account"])
