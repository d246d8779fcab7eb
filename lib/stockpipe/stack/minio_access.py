"""The local MinIO's job user: jobs, notebooks, DAGs and the report never hold the root keys.

The stack manager (root keys) creates each bucket and grants the job user what a job
needs on the buckets it was given, and nothing else: objects read, written and
deleted, the bucket listed. No bucket policy, no admin action, no other bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlparse

from minio import MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException

from stockpipe.config import Settings
from stockpipe.lake import ensure_bucket

#: The canned policy attached to the job user; it lists the granted buckets.
JOB_POLICY = "stockpipe-job"

_BUCKET_ACTIONS = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
_OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]


def job_policy(buckets: Iterable[str]) -> dict:
    """The job user's policy: object access within ``buckets`` only."""
    names = sorted(set(buckets))
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": _BUCKET_ACTIONS,
                "Resource": [f"arn:aws:s3:::{b}" for b in names],
            },
            {
                "Effect": "Allow",
                "Action": _OBJECT_ACTIONS,
                "Resource": [f"arn:aws:s3:::{b}/*" for b in names],
            },
        ],
    }


def policy_buckets(policy: dict) -> set[str]:
    """The buckets a job policy grants (read back from MinIO)."""
    return {
        arn.removeprefix("arn:aws:s3:::")
        for statement in policy.get("Statement", [])
        for arn in statement.get("Resource", [])
        if "/" not in arn
    }


def has_root_keys(settings: Settings) -> bool:
    return bool(settings.s3_root_access_key and settings.s3_root_secret_key.get_secret_value())


def as_root(settings: Settings) -> Settings:
    """The same settings with MinIO's root keys as the S3 keys (stack manager only)."""
    return settings.model_copy(
        update={
            "s3_access_key": settings.s3_root_access_key,
            "s3_secret_key": settings.s3_root_secret_key,
        }
    )


def _admin(settings: Settings) -> MinioAdmin:
    url = urlparse(settings.s3_url)
    return MinioAdmin(
        endpoint=url.netloc,
        credentials=StaticProvider(
            settings.s3_root_access_key, settings.s3_root_secret_key.get_secret_value()
        ),
        region=settings.s3_region,
        secure=url.scheme == "https",
    )


def _granted(admin: MinioAdmin) -> set[str]:
    try:
        info = json.loads(admin.policy_info(JOB_POLICY))
    except MinioAdminException as exc:
        if "NoSuchPolicy" in str(exc) or "does not exist" in str(exc):
            return set()
        raise
    return policy_buckets(info.get("Policy", info))  # newer servers wrap the document


def grant_buckets(settings: Settings, buckets: Iterable[str]) -> None:
    """Create or update the job user (``s3_access_key``) with access to ``buckets`` too."""
    admin = _admin(settings)
    wanted = set(buckets)
    granted = _granted(admin)
    if not wanted <= granted:
        admin.policy_add(JOB_POLICY, policy=job_policy(granted | wanted))
    admin.user_add(settings.s3_access_key, settings.s3_secret_key.get_secret_value())
    user = json.loads(admin.user_info(settings.s3_access_key))
    if JOB_POLICY not in (user.get("policyName") or "").split(","):
        admin.attach_policy([JOB_POLICY], user=settings.s3_access_key)


def provision_bucket(settings: Settings) -> bool:
    """Create ``settings.bucket`` if missing and let the job user use it. True if created.

    Without root keys (a store the user manages), the job keys create the bucket.
    """
    if not has_root_keys(settings):
        return ensure_bucket(settings)
    made = ensure_bucket(as_root(settings))
    grant_buckets(settings, [settings.bucket])
    return made
