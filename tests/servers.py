"""Start and stop local FlashHead services (real OmniRT, our stand-in, our resident ``serve``) as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """One service on a loopback port; ``start`` again after ``stop`` reuses the same port."""

    def __init__(
        self,
        kind: str,
        command: Sequence[str],
        output_dir: Path,
        log_path: Path,
        port: int,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        health_path: str | None = "/healthz",
        ready: Callable[[ServiceProcess], bool] | None = None,
    ) -> None:
        self.kind = kind
        self.command = list(command)
        self.output_dir = output_dir
        self.log_path = log_path
        self.port = port
        self.api_key = api_key
        self.env = {**os.environ, **(env or {})}
        self.health_path = health_path
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.log_path.parent,  # OmniRT writes its own omnirt.log into the working directory
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer {self.health_path} within {timeout:g} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        """HTTP services answer their health route; others (Redis) accept a connection, unless they
        bring their own readiness check (gRPC workers)."""
        if self.ready is not None:
            return self.ready(self)
        try:
            if self.health_path is None:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return True
            return httpx.get(self.base_url + self.health_path, timeout=1.0).status_code == 200
        except (OSError, httpx.HTTPError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the service and the processes it started: a crash, not a shutdown."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _launch(
    kind: str,
    program: Sequence[str],
    workdir: Path,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> ServiceProcess:
    """A service of ``kind`` started as ``program`` with the arguments every test service takes: a
    free loopback port, its output dir under ``workdir``, and with ``api_key`` a key file holding it."""
    port = free_port()
    output_dir = workdir / f"{kind}-out"
    command = [*program, "--port", str(port), "--output-dir", str(output_dir), *extra_args]
    if api_key:
        key_file = workdir / f"{kind}-keys.txt"
        key_file.write_text(api_key + "\n")
        command += ["--api-key-file", str(key_file)]
    return ServiceProcess(kind, command, output_dir, workdir / f"{kind}.log", port, api_key, env)


def omnirt(
    workdir: Path,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    name: str = "omnirt",
) -> ServiceProcess:
    """The real OmniRT server (PyPI omnirt[server]) with a fake model checkout; ``extra_args`` are
    omnirt serve's (``--max-concurrency``, ``--redis-url``)."""
    program = [sys.executable, str(TESTS / "omnirt_launcher.py")]
    service = _launch(name, program, workdir, api_key, env, extra_args)
    service.output_dir.mkdir(parents=True, exist_ok=True)
    return service


def _ours(
    kind: str,
    subcommand: Sequence[str],
    workdir: Path,
    api_key: str | None,
    env: dict[str, str] | None,
    extra_args: Sequence[str],
) -> ServiceProcess:
    """One of our services, started as a user starts it (``opentalking-flashhead SUBCOMMAND …``), reading
    and writing only under its output dir and the tests' temp root (where every test's shared dir lies)."""
    program = [sys.executable, "-m", "opentalking_flashhead.cli", *subcommand]
    return _launch(kind, program, workdir, api_key, env, ["--shared-root", str(workdir.parent), *extra_args])


def standin(
    workdir: Path, api_key: str | None = None, env: dict[str, str] | None = None, extra_args: Sequence[str] = ()
) -> ServiceProcess:
    """Our stand-in service (``serve-standin``)."""
    return _ours("standin", ["serve-standin"], workdir, api_key, env, extra_args)


FAKE_CHECKOUT = TESTS / "fake_flashhead"


def serve(
    workdir: Path,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    model_type: str = "pro",
) -> ServiceProcess:
    """Our resident service (``serve``) on the CPU with the test double (the fake SoulX-FlashHead checkout)."""
    return _ours("serve", ["serve", *_fake_model_flags(model_type)], workdir, api_key, env, extra_args)


def _fake_model_flags(model_type: str) -> list[str]:
    """``serve``'s and ``worker``'s model flags for the test double on the CPU."""
    models = FAKE_CHECKOUT / "models"
    flags = ["--flashhead-repo", str(FAKE_CHECKOUT), "--ckpt-dir", str(models / "SoulX-FlashHead-1_3B")]
    flags += ["--wav2vec-dir", str(models / "wav2vec2-base-960h"), "--model-type", model_type]
    return [*flags, "--device", "cpu", "--dtype", "fp32", "--no-compile"]


def worker(
    workdir: Path, model_type: str = "lite", env: dict[str, str] | None = None, extra_args: Sequence[str] = ()
) -> ServiceProcess:
    """Our OmniRT gRPC worker (``worker --listen``) with the test double; ready once its Health says so."""
    port = free_port()
    command = [sys.executable, "-m", "opentalking_flashhead.cli", "worker", "--listen", f"127.0.0.1:{port}"]
    command += [*_fake_model_flags(model_type), *extra_args]
    name = f"worker-{port}"
    return ServiceProcess(name, command, workdir, workdir / f"{name}.log", port, env=env, ready=_worker_ready)


def _worker_ready(service: ServiceProcess) -> bool:
    from omnirt.engine.grpc_transport import probe_worker_health

    try:
        return probe_worker_health(f"127.0.0.1:{service.port}", timeout_s=1.0)["state"] == "ready"
    except Exception:  # grpc.RpcError while it is starting
        return False


def slow(kind: str, workdir: Path, seconds: float) -> ServiceProcess:
    """A service of ``kind`` ("omnirt" or "standin") whose every generation takes ``seconds``."""
    if kind == "omnirt":
        return omnirt(workdir, env={"FAKE_FLASHHEAD_SLEEP": str(seconds)})
    return standin(workdir, extra_args=("--latency", str(seconds)))


NGINX_CONF = """
worker_processes 1;
{user}
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format fronts '$request_method $uri $status $upstream_addr';
    access_log {root}/nginx-access.log fronts;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream fronts {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://fronts;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def nginx(workdir: Path, fronts: Sequence[ServiceProcess], standby: bool = False) -> ServiceProcess:
    """Debian's nginx in front of several OmniRT fronts (the config examples/deploy-cluster.md shows),
    its access log in ``workdir / "nginx" / "nginx-access.log"``. ``standby``: every front but the first
    is a backup, taking requests only while the first is down."""
    root = workdir / "nginx"
    root.mkdir(exist_ok=True)
    port = free_port()
    upstreams = "\n".join(
        f"        server 127.0.0.1:{front.port} max_fails=1 fail_timeout=30s{' backup' if standby and n else ''};"
        for n, front in enumerate(fronts)
    )
    user = "user root;" if os.geteuid() == 0 else ""  # the workers must read the test's private temp dir
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, root=root, servers=upstreams, port=port))
    command = ["nginx", "-p", str(root), "-c", str(conf), "-g", "daemon off;"]
    return ServiceProcess("nginx", command, root, root / "nginx.log", port)
