"""A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager) on loopback, for the
tests and the demo.

No kubelet or scheduler: the operator only talks to the API server, and that is the part whose behaviour
(validation, CEL rules, the status subresource, RBAC, watches, resourceVersion conflicts) mocks get wrong.
kube-controller-manager runs only its garbage collector, namespace and ClusterRole-aggregation controllers, so
deleting an owner removes what it owns (imported PaiPipelineRuns), a deleted namespace really goes away, and
aggregated roles reach edit and view. ServiceAccounts
get no token Secrets and no "default" ServiceAccount (tokens come from the TokenRequest API instead), and
pods are never scheduled.

The binaries are built from source by `make k8s-bin` (tests/k8s/build.sh). With the environment
variable PAIFLOW_TEST_KUBECONFIG set, `ControlPlane.from_environment()` uses that cluster instead.

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces")

    python -m tests.support.controlplane [--workdir DIR]   # prints `export KUBECONFIG=...`, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

K8S_VERSION = "v1.37.2"  # keep in step with K8S_VERSION in the Makefile and tests/k8s/go.mod
ENV_BIN_DIR = "PAIFLOW_K8S_BIN"
ENV_KUBECONFIG = "PAIFLOW_TEST_KUBECONFIG"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
# Only what the tests rely on: garbage collection by ownerReferences, namespace deletion, and the aggregation of
# ClusterRoles into edit/view (the shipped paiflow-operator-edit/-view roles).
CONTROLLERS = "garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "paiflow-admin"


def default_bin_dir() -> Path:
    """Where `make k8s-bin` puts the binaries (the Makefile exports the same path as PAIFLOW_K8S_BIN)."""
    if env := os.environ.get(ENV_BIN_DIR):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "paiflow-operator" / f"k8s-{K8S_VERSION}" / "bin"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or died."""


class BinariesMissingError(ControlPlaneError):
    """etcd / kube-apiserver / kubectl have not been built yet."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; unlike CalledProcessError its message carries kubectl's stderr."""

    def __str__(self) -> str:
        out = f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"
        if stdout := (self.stdout or "").strip():
            out += f"\nstdout: {stdout[:2000]}"
        return out


# --------------------------------------------------------------------------------------------------
# Certificates. ECDSA P-256 everywhere: generating the keys takes milliseconds (RSA takes ~100 ms
# each), and kube-apiserver accepts ECDSA for serving, client and service-account signing keys.


@dataclass(frozen=True)
class _Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: Sequence[x509.ObjectIdentifier] = (),
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Back-dated so a clock that moved a little (suspended laptop, VM migration) is no problem;
        # 30 days covers a long-running `python -m tests.support.controlplane` for the demo.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pki(directory: Path) -> _Pki:
    directory.mkdir(parents=True, exist_ok=True)
    pki = _Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
    )

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("paiflow-test-ca")
    ca = _issue(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)
    _write_cert(pki.ca_cert, ca)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        # The `kubernetes` Service's ClusterIP (first address of the service range).
        x509.IPAddress(next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts())),
    ]
    serving = _issue(
        name("kube-apiserver"),
        serving_key.public_key(),
        ca_name,
        ca_key,
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=sans,
    )
    _write_cert(pki.serving_cert, serving)
    _write_private_key(pki.serving_key, serving_key)

    # The x509 authenticator maps CN to the user name and O to groups; system:masters bypasses RBAC
    # entirely, which is what an admin kubeconfig of a kubeadm cluster does too.
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        name(ADMIN_USER, "system:masters"),
        admin_key.public_key(),
        ca_name,
        ca_key,
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    _write_cert(pki.admin_cert, admin)
    _write_private_key(pki.admin_key, admin_key)

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_private_key(pki.sa_private_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


# --------------------------------------------------------------------------------------------------
# Child processes. Each runs in its own session (so a Ctrl-C in the terminal reaches only us and we
# stop the API server before etcd, and so stop() can signal the whole group) and has PR_SET_PDEATHSIG
# set, so the kernel kills it when we die without running any cleanup (SIGKILL, os._exit,
# pytest-timeout's thread method). Note that the "parent" for PDEATHSIG is the *thread* that forked:
# start control planes from the main thread or from a thread that outlives them.

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before prctl took effect; then nothing would ever kill us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


class _Daemon:
    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
            close_fds=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float) -> None:
        if self.proc.returncode is None:
            # Signal the group, not just the leader, in case it ever forks helpers. Only while the
            # leader is unreaped: after that the group id could belong to an unrelated process.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        return "\n".join(text.splitlines()[-lines:])


# Every started control plane, so atexit and the SIGTERM handler can stop what tests left running.
_live: set[ControlPlane] = set()
_hooks_installed = False


def _stop_all() -> None:
    for cp in list(_live):
        with contextlib.suppress(Exception):
            cp.stop()


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    # Python's default for SIGTERM/SIGHUP is to die on the spot, without atexit or finally blocks.
    # Stop our processes, then die of the same signal so the sender sees the usual exit status.
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_cleanup_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_stop_all)
    # SIGINT needs nothing: KeyboardInterrupt unwinds through `with`/fixture teardown, then atexit.
    # Handlers that someone else installed are left alone (they decide how their program ends).
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _on_terminate)


def _free_ports(count: int) -> list[int]:
    # Bind all at once so the kernel hands out distinct ports. Another process can still take one
    # before etcd/kube-apiserver binds it; start() retries on "address already in use".
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _PortClash(ControlPlaneError):
    pass


# --------------------------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver on 127.0.0.1, or an existing cluster given by a kubeconfig.

    workdir: certificates, kubeconfigs, etcd data and logs (etcd.log, kube-apiserver.log). Default: a
        temporary directory, removed by stop() (kept if start-up failed, for its logs). A given
        workdir is kept; its etcd data is wiped at start, so every start is a fresh cluster.
    bin_dir: etcd, kube-apiserver, kubectl; default PAIFLOW_K8S_BIN or the `make k8s-bin` cache.
    kubeconfig: use this existing cluster; nothing is started or stopped (kubectl is taken from
        bin_dir, else from PATH).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        bin_dir: Path | None = None,
        kubeconfig: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.bin_dir = bin_dir or default_bin_dir()
        self._owns_workdir = workdir is None
        self._workdir = workdir.resolve() if workdir is not None else None
        self._external_kubeconfig = kubeconfig
        self._kubeconfig: Path | None = None
        self._server: str | None = None
        self._startup_timeout = startup_timeout
        self._etcd: _Daemon | None = None
        self._apiserver: _Daemon | None = None
        self._controller_manager: _Daemon | None = None
        self._started = False
        self.startup_seconds: float | None = None
        # Kept to restart kube-apiserver alone (stop_apiserver/start_apiserver).
        self._pki: _Pki | None = None
        self._etcd_url = ""
        self._api_port = 0

    @classmethod
    def from_environment(cls, workdir: Path | None = None) -> ControlPlane:
        """The cluster named by PAIFLOW_TEST_KUBECONFIG if set, else a local one."""
        external = os.environ.get(ENV_KUBECONFIG)
        return cls(workdir, kubeconfig=Path(external).expanduser() if external else None)

    # -- public API --------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        # A temporary one is made on first use, so constructing a ControlPlane (to ask
        # missing_binaries(), say) and never starting it leaves nothing behind.
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="paiflow-k8s-")).resolve()
        return self._workdir

    @property
    def external(self) -> bool:
        return self._external_kubeconfig is not None

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters for the local cluster)."""
        if self._kubeconfig is None:
            raise ControlPlaneError("control plane not started")
        return self._kubeconfig

    @property
    def server(self) -> str:
        if self._server is None:
            raise ControlPlaneError("control plane not started")
        return self._server

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the local etcd and kube-apiserver (empty for an external cluster)."""
        return {d.name: d.pid for d in (self._etcd, self._apiserver, self._controller_manager) if d is not None}

    def missing_binaries(self) -> list[str]:
        needed = ("kubectl",) if self.external else BINARIES
        if self.external and shutil.which("kubectl"):
            return []
        return [b for b in needed if not os.access(self.bin_dir / b, os.X_OK)]

    def start(self) -> ControlPlane:
        if self._started:
            return self
        if missing := self.missing_binaries():
            raise BinariesMissingError(
                f"missing {', '.join(missing)} in {self.bin_dir}: run `make k8s-bin` (builds them from "
                f"source once, into a cache outside the repository), or point {ENV_BIN_DIR} at a "
                f"directory with them, or {ENV_KUBECONFIG} at an existing cluster's kubeconfig"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if self._external_kubeconfig is not None:
            self._kubeconfig = self._external_kubeconfig
            self._server = self._kubectl_config_server()
            self._started = True
        else:
            _install_cleanup_hooks()
            _live.add(self)
            self._started = True  # so stop() cleans up after a failed start too
            for attempt in range(3):
                try:
                    self._start_local()
                    break
                except _PortClash:
                    self._stop_processes()
                    if attempt == 2:
                        raise
                except BaseException:
                    # Keep the workdir: its logs are what explains the failure.
                    self._owns_workdir = False
                    self.stop()
                    raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; remove a temporary workdir. Safe to call repeatedly."""
        self._stop_processes()
        _live.discard(self)
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._started = False

    def running(self) -> bool:
        """Whether the local processes are all alive (always True for an external cluster)."""
        if self.external:
            return self._started
        return all(d is not None and d.alive() for d in (self._etcd, self._apiserver, self._controller_manager))

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of the etcd and kube-apiserver logs (for failure messages)."""
        return "\n".join(
            f"--- {d.log_path}\n{d.log_tail(lines)}" for d in (self._etcd, self._apiserver) if d is not None
        )

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def kubectl_path(self) -> Path:
        local = self.bin_dir / "kubectl"
        if os.access(local, os.X_OK) or not self.external:
            return local
        return Path(shutil.which("kubectl") or "kubectl")

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin unless another kubeconfig is given).

        With check=True a non-zero exit raises KubectlError (a CalledProcessError) showing stderr.
        """
        argv = [
            str(self.kubectl_path),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            # Own discovery cache: ~/.kube/cache is keyed by host:port, and a later control plane
            # on a reused port would otherwise be answered from an earlier one's discovery.
            f"--cache-dir={self.workdir / 'kube-cache'}",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path, expiration_seconds: int = 3600) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount namespace/name and return its path.

        The token comes from the TokenRequest API (`kubectl create token`), as projected tokens do in
        pods; the ServiceAccount must exist. The API server rejects expirations under 600 s.
        """
        token = self.kubectl(
            "create", "token", name, "--namespace", namespace, f"--duration={expiration_seconds}s"
        ).stdout.strip()
        admin = yaml.safe_load(self.kubectl("config", "view", "--minify", "--flatten", "-o", "json").stdout)
        cluster = admin["clusters"][0]["cluster"]
        user = f"system:serviceaccount:{namespace}:{name}"
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "paiflow-test", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "paiflow-test", "user": user, "namespace": namespace}}],
            "current-context": user,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_secret_file(path, yaml.safe_dump(config, sort_keys=False))
        return path

    # -- internals ---------------------------------------------------------------------------------

    def _kubectl_config_server(self) -> str:
        server = self.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
        return server.stdout.strip()

    def stop_apiserver(self) -> None:
        """Takes kube-apiserver down (etcd and its data stay): an API server outage, for tests."""
        if self._apiserver is None:
            raise ControlPlaneError("no local kube-apiserver is running")
        apiserver, self._apiserver = self._apiserver, None
        apiserver.stop(grace=10)

    def start_apiserver(self) -> None:
        """Brings kube-apiserver back on the same port, with the same certificates; returns once it is ready."""
        if self._apiserver is not None or self._pki is None:
            raise ControlPlaneError("kube-apiserver is running, or the control plane was never started")
        self._apiserver = _Daemon(
            "kube-apiserver",
            [str(self.bin_dir / "kube-apiserver"), *self._apiserver_flags(self._pki, self._etcd_url, self._api_port)],
            self.workdir / "kube-apiserver.log",
        )
        self._wait_ready(self._pki)

    def _start_local(self) -> None:
        pki = _write_pki(self.workdir / "pki")
        etcd_port, peer_port, api_port = _free_ports(3)
        data_dir = self.workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        # Plain HTTP is acceptable for etcd: it listens on loopback only and holds throwaway data.
        self._etcd = _Daemon(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=paiflow-test",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=paiflow-test={peer_url}",
                "--initial-cluster-state=new",
                # Data is thrown away at the end; skipping fsync makes every write much cheaper.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        # Started right away: kube-apiserver retries etcd until it answers.
        self._apiserver = _Daemon(
            "kube-apiserver",
            [str(self.bin_dir / "kube-apiserver"), *self._apiserver_flags(pki, etcd_url, api_port)],
            self.workdir / "kube-apiserver.log",
        )
        self._server = f"https://127.0.0.1:{api_port}"
        self._kubeconfig = self.workdir / "admin.kubeconfig"
        _write_admin_kubeconfig(self._kubeconfig, self._server, pki)
        self._pki, self._etcd_url, self._api_port = pki, etcd_url, api_port
        self._wait_ready(pki)
        self._controller_manager = _Daemon(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self._kubeconfig}",
                f"--controllers={CONTROLLERS}",
                "--leader-elect=false",
                # No serving endpoint: nothing scrapes or probes it here.
                "--secure-port=0",
                "--use-service-account-credentials=false",
            ],
            self.workdir / "kube-controller-manager.log",
        )

    def _apiserver_flags(self, pki: _Pki, etcd_url: str, port: int) -> list[str]:
        return [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            # Without it the API server looks for a non-loopback interface to advertise.
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",  # unused (certs given), not /var/run
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            # The TokenRequest API needs an issuer and a signing key; the public key verifies tokens.
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # As in real clusters, so the operator's RBAC manifests are exercised, not bypassed.
            "--authorization-mode=Node,RBAC",
            # The endpoint reconciler would publish 127.0.0.1 as the `kubernetes` Service's endpoint,
            # which nothing in-cluster could use anyway (there are no pods).
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]

    def _wait_ready(self, pki: _Pki) -> None:
        assert self._etcd is not None and self._apiserver is not None
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        # /readyz covers etcd and the post-start hooks (RBAC bootstrap roles included); the last two
        # make sure what tests use first is really there: default RBAC and the default namespace.
        checks = [
            "/readyz",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin",
            "/api/v1/namespaces/default",
        ]
        deadline = time.monotonic() + self._startup_timeout
        last_error = ""
        while checks:
            for daemon in (self._etcd, self._apiserver):
                if not daemon.alive():
                    tail = daemon.log_tail()
                    error = _PortClash if "address already in use" in tail else ControlPlaneError
                    raise error(
                        f"{daemon.name} exited with status {daemon.proc.returncode} during start-up; "
                        f"last lines of {daemon.log_path}:\n{tail}"
                    )
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kube-apiserver not ready after {self._startup_timeout:.0f}s ({last_error}); "
                    f"last lines of {self._apiserver.log_path}:\n{self._apiserver.log_tail()}\n"
                    f"last lines of {self._etcd.log_path}:\n{self._etcd.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.server + checks[0], context=ctx, timeout=5) as resp:
                    resp.read()
                checks.pop(0)
                continue
            except (urllib.error.URLError, OSError) as exc:  # refused while starting, 500 until ready
                last_error = f"GET {checks[0]}: {exc}"
            time.sleep(0.1)

    def _stop_processes(self) -> None:
        # Take them out first so a SIGTERM arriving in the middle of stop() does not stop them twice.
        apiserver, self._apiserver = self._apiserver, None
        etcd, self._etcd = self._etcd, None
        controller_manager, self._controller_manager = self._controller_manager, None
        if controller_manager is not None:
            controller_manager.stop(grace=5)
        # API server first: stopping etcd under it makes it log errors and retry until its deadline.
        if apiserver is not None:
            apiserver.stop(grace=10)
        if etcd is not None:
            etcd.stop(grace=10)


def _write_secret_file(path: Path, text: str) -> None:
    # Created 0600 from the start: kubeconfigs hold credentials.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _write_admin_kubeconfig(path: Path, server: str, pki: _Pki) -> None:
    # Certificates embedded, so the file still works when copied elsewhere.
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "paiflow-test",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": ADMIN_USER,
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "paiflow-test",
                "context": {"cluster": "paiflow-test", "user": ADMIN_USER, "namespace": "default"},
            }
        ],
        "current-context": "paiflow-test",
    }
    _write_secret_file(path, yaml.safe_dump(config, sort_keys=False))


# --------------------------------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.controlplane",
        description="Start etcd + kube-apiserver on loopback, print `export KUBECONFIG=...`, "
        "run until Ctrl-C or SIGTERM, then stop everything.",
    )
    parser.add_argument("--workdir", type=Path, help="keep certificates, kubeconfig and logs here")
    parser.add_argument("--bin-dir", type=Path, help=f"binaries (default: {default_bin_dir()})")
    args = parser.parse_args(argv)

    # SIGTERM and SIGHUP end the wait the way Ctrl-C does, so the `with` block below does the teardown.
    # SIGINT is set too: a shell starts `cmd &` with SIGINT ignored, and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)
    try:
        with ControlPlane(args.workdir, bin_dir=args.bin_dir) as cp:
            print(f"export KUBECONFIG={shlex.quote(str(cp.kubeconfig))}", flush=True)
            print(
                f"# {cp.server} ready in {cp.startup_seconds:.1f}s (logs in {cp.workdir}); Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            while cp.running():
                time.sleep(0.5)
            print(f"control plane died:\n{cp.log_tails()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except ControlPlaneError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
