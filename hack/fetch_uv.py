"""Fetches uv's wheel for this platform from PyPI and unpacks the uv binary, with the Python standard library only.

    python3 hack/fetch_uv.py hack/uv-requirements.txt DEST_DIR      # then DEST_DIR/bin/uv

For a system Python that cannot make a virtual environment (Debian or Ubuntu without python3-venv, and without
pip): hack/bootstrap-uv.sh falls back to this. The wheel's SHA-256 must be one of the hashes pinned in the
requirements file, checked before and after the download; nothing is installed into any Python.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import stat
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

# PyPI's Simple API in its JSON form (PEP 691), as pip and uv read it.
INDEX = os.environ.get("PAIFLOW_PYPI_SIMPLE", "https://pypi.org/simple")


def pinned(requirements: Path) -> tuple[str, set[str]]:
    text = requirements.read_text()
    match = re.search(r"^uv==(\S+)", text, re.MULTILINE)
    if not match:
        raise SystemExit(f"fetch_uv: no uv==VERSION in {requirements}")
    return match.group(1), set(re.findall(r"--hash=sha256:([0-9a-f]{64})", text))


def platform_tags() -> list[str]:
    """Wheel platform tags this machine runs, best first (uv publishes manylinux, musllinux and macOS wheels)."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    system = platform.system()
    if system == "Linux":
        libc, _ = platform.libc_ver()
        family = "manylinux" if libc == "glibc" else "musllinux"
        return [f"{family}_", f"{family}2014_{arch}"] if family == "manylinux" else [f"{family}_"]
    if system == "Darwin":
        return ["macosx_"]
    raise SystemExit(f"fetch_uv: no uv wheel for {system} here; install uv yourself and put it on PATH")


def choose(files: list[dict[str, object]]) -> dict[str, object]:
    machine = platform.machine().lower()
    arches = {
        "x86_64": ("x86_64",),
        "amd64": ("x86_64",),
        "aarch64": ("aarch64", "arm64"),
        "arm64": ("arm64", "aarch64"),
    }
    wanted_arch = arches.get(machine, (machine,))
    prefixes = platform_tags()
    for prefix in prefixes:
        for entry in files:
            name = str(entry["filename"])
            if not name.endswith(".whl"):
                continue
            tags = name[:-4].split("-")[-1].split(".")
            if any(t.startswith(prefix) and t.endswith(wanted_arch) for t in tags):
                return entry
    raise SystemExit(f"fetch_uv: no uv wheel for {platform.system()} {machine} on PyPI")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    requirements, dest = Path(argv[0]), Path(argv[1])
    version, hashes = pinned(requirements)
    request = urllib.request.Request(f"{INDEX}/uv/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = [f for f in json.load(response)["files"] if str(f["filename"]).startswith(f"uv-{version}-")]
    entry = choose(files)
    digest = str(entry["hashes"]["sha256"])  # type: ignore[index]
    if digest not in hashes:
        raise SystemExit(f"fetch_uv: {entry['filename']} (sha256 {digest}) is not pinned in {requirements}; refusing")
    with urllib.request.urlopen(str(entry["url"]), timeout=300) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise SystemExit(f"fetch_uv: {entry['filename']} does not match its pinned sha256; refusing")
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        member = next(n for n in wheel.namelist() if re.fullmatch(r"uv-[^/]+\.data/scripts/uv", n))
        binary = wheel.read(member)
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    # Written beside its final name and renamed: an interrupted fetch never leaves a half binary.
    with tempfile.NamedTemporaryFile(dir=dest / "bin", delete=False) as out:
        out.write(binary)
    os.chmod(out.name, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    os.replace(out.name, dest / "bin" / "uv")
    print(f"fetch_uv: {entry['filename']} -> {dest / 'bin' / 'uv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
