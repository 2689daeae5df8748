"""deploy/Containerfile: podman builds it from this checkout's wheels, and `smsbot dev` in it answers a text."""

from __future__ import annotations

import os
import pathlib
import resource
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import requests

from smsbot.web.cli import DEV_ADMIN

from support.procs import free_port, wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = "localhost/smsbot-base:bookworm"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is missing: install Debian's podman"),
]


def podman(*args: str, timeout: float = 300) -> str:
    # Debian's crun (1.8) refuses a hybrid cgroup hierarchy (cgroups v1 and v2 mounted together), which some machines
    # have; runc takes it.
    runtime = ["--runtime", "runc"] if os.path.isdir("/sys/fs/cgroup/unified") and shutil.which("runc") else []
    done = subprocess.run(["podman", *runtime, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"podman {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def ulimits() -> list[str]:
    """Limits no higher than this process's: podman's defaults are higher, and raising them needs CAP_SYS_RESOURCE,
    which a container or VM running the tests may lack."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def base() -> str:
    """The base image (Debian bookworm, python3, python3-venv), made from Debian's packages unless podman has it."""
    if subprocess.run(["podman", "image", "exists", BASE], check=False).returncode != 0:
        if shutil.which("mmdebstrap") is None:
            pytest.skip(f"{BASE} is missing and mmdebstrap, which makes it, is not installed")
        made = subprocess.run(
            f"mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates bookworm - "
            f"| podman import - {BASE}", shell=True, capture_output=True, text=True, timeout=600, check=False)
        assert made.returncode == 0, made.stderr
    return BASE


@pytest.fixture
def image(base: str, tmp_path: pathlib.Path) -> Iterator[str]:
    # From a copy without build/ and *.egg-info/: setuptools would put a stale build/lib's files in the wheel.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "node_modules", "__pycache__", ".*_cache"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr
    name = f"localhost/smsbot-test:{uuid.uuid4().hex[:12]}"
    podman("build", "--quiet", "--layers=false", *ulimits(), "--build-arg", f"BASE={base}",
           "-f", str(ROOT / "deploy" / "Containerfile"), "-t", name, str(wheels))
    yield name
    podman("rmi", "--force", name)


def test_smsbot_dev_in_the_image_answers_a_text_and_stops_on_sigterm(image: str) -> None:
    port = free_port()
    container = podman("run", "--detach", *ulimits(), "-p", f"127.0.0.1:{port}:8080", image,
                       "dev", "--host", "0.0.0.0", "--port", "8080").strip()
    base_url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            try:
                return requests.get(f"{base_url}/healthz", timeout=2).ok
            except requests.ConnectionError:
                running = podman("inspect", "--format", "{{.State.Running}}", container).strip()
                assert running == "true", "smsbot stopped in the container"
                return False

        wait_for(healthy, 60, "/healthz in the container")
        sent = requests.post(f"{base_url}/dev/phone/send", json={"from": DEV_ADMIN, "text": "HELP"}, timeout=10)
        assert sent.json()["ok"] is True

        def replies() -> list[str]:
            texts = requests.get(f"{base_url}/dev/phone/texts", timeout=10).json()["texts"]
            return [t["text"] for t in texts if t["direction"] == "out" and t["number"] == DEV_ADMIN]

        assert "INVITE" in " ".join(wait_for(replies, 30, "the reply to HELP"))
        assert podman("exec", container, "id", "-u").strip() != "0"
        podman("stop", "--time", "30", container)
        assert podman("inspect", "--format", "{{.State.ExitCode}}", container).strip() == "0"
    finally:
        logs = subprocess.run(["podman", "logs", container], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60, check=False)
        print(logs.stdout)  # pytest shows it when the test fails
        podman("rm", "--force", container)
