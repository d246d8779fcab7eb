"""Least privilege on the real stack: jobs hold the MinIO job user's keys, not root's, and
what the services write under the state directory is theirs alone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from minio import MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException

from stockpipe.config import child_environ
from stockpipe.stack.minio_access import as_root

pytestmark = pytest.mark.integration


def _s3(settings):
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_url,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        region_name=settings.s3_region,
    )


def _error_code(call) -> str:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


def test_the_job_user_works_on_objects_but_cannot_open_the_bucket(settings):
    assert settings.s3_access_key != settings.s3_root_access_key
    job = _s3(settings)
    key = f"privilege/{uuid.uuid4().hex}.txt"
    job.put_object(Bucket=settings.bucket, Key=key, Body=b"probe")
    assert job.get_object(Bucket=settings.bucket, Key=key)["Body"].read() == b"probe"

    public = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{settings.bucket}/*"],
            }
        ],
    }
    put_policy = lambda: job.put_bucket_policy(Bucket=settings.bucket, Policy=json.dumps(public))  # noqa: E731
    assert _error_code(put_policy) == "AccessDenied"
    anonymous = requests.get(f"{settings.s3_url}/{settings.bucket}/{key}", timeout=10)
    assert anonymous.status_code == 403  # still private

    assert _error_code(lambda: job.delete_bucket(Bucket=settings.bucket)) == "AccessDenied"
    other = f"privilege-{uuid.uuid4().hex[:8]}"
    assert _error_code(lambda: job.create_bucket(Bucket=other)) == "AccessDenied"
    _s3(as_root(settings)).create_bucket(Bucket=other)  # root's, never granted
    assert _error_code(lambda: job.list_objects_v2(Bucket=other)) == "AccessDenied"
    job.delete_object(Bucket=settings.bucket, Key=key)


def test_the_job_user_has_no_admin_rights(settings):
    admin = MinioAdmin(
        endpoint=settings.s3_url.removeprefix("http://"),
        credentials=StaticProvider(
            settings.s3_access_key, settings.s3_secret_key.get_secret_value()
        ),
        secure=False,
    )
    with pytest.raises(MinioAdminException) as err:
        admin.user_add("intruder", "intruder-secret-123")
    assert err.value._code == 403 or "AccessDenied" in str(err.value)


def test_children_get_the_job_keys_only(settings):
    os.environ["STOCKPIPE_S3_ROOT_SECRET_KEY"] = settings.s3_root_secret_key.get_secret_value()
    try:
        env = child_environ(settings)
    finally:
        del os.environ["STOCKPIPE_S3_ROOT_SECRET_KEY"]
    probe = "import os, json; print(json.dumps(dict(os.environ)))"
    seen = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert settings.s3_root_secret_key.get_secret_value() not in seen.values()
    assert seen["STOCKPIPE_S3_ACCESS_KEY"] == settings.s3_access_key


def test_the_state_directory_and_what_services_write_are_private(stack):
    state = stack.settings.state_dir
    assert stat.S_IMODE(state.stat().st_mode) in (0o700, 0o710)  # 0710: postgres passes
    leaks = []
    for svc in stack.services:
        for root, dirs, files in os.walk(svc.dir):
            for name in dirs + files:
                path = os.path.join(root, name)
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o007:
                    leaks.append(f"{path} {stat.filemode(mode)}")
    assert sum(1 for svc in stack.services for _ in svc.dir.rglob("*")) > 20  # they wrote
    assert leaks == []
