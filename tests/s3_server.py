"""A real S3-compatible server on 127.0.0.1 (moto's standalone server), for
tests that exercise s3:// storage: `s3_env(port)` is the environment every
process (driver, Ray nodes, pyarrow) needs to reach it."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow.fs as pafs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def s3_env(port: int) -> dict[str, str]:
    """pyarrow and boto read these: endpoint, dummy credentials, region."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def moto_server(bucket: str) -> Iterator[int]:
    """A running moto server with `bucket` created; yields its port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        filesystem = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="testing",
                                       secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        filesystem.create_dir(bucket)
        yield port
    finally:
        server.stop()
