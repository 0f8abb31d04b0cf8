"""Installing what the stack needs from the package registries, cached and idempotent."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from smartport.errors import StackError

DEPLOY_DIR = Path(__file__).resolve().parent
APT_PACKAGES = ("mosquitto", "mosquitto-clients", "clickhouse-server", "clickhouse-client", "kcat")
ANVIL_PACKAGE = "@foundry-rs/anvil@1.7.1"


def _run(argv: Sequence[str], what: str, cwd: Path | None = None) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise StackError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n" + "\n".join(output)
        )


def missing_apt_packages(packages: Sequence[str] = APT_PACKAGES) -> list[str]:
    missing = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True,
            check=False,
        )
        if "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


def ensure_apt(packages: Sequence[str] = APT_PACKAGES) -> list[str]:
    """Install the missing Debian packages (apt-get update once first); returns what was added."""
    missing = missing_apt_packages(packages)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise StackError(
            f"Debian packages {', '.join(missing)} are missing and installing them needs root: "
            f"run `sudo apt-get install -y {' '.join(missing)}` or run set-up as root"
        )
    _run(["apt-get", "update", "-q"], "apt-get update")
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
         f"installing Debian packages {', '.join(missing)}")
    return missing


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_kafka_jars(libs_dir: Path) -> Path:
    """Kafka's jars from Maven Central (deploy/kafka/pom.xml); fetched again if the pom changed."""
    pom = DEPLOY_DIR / "kafka" / "pom.xml"
    stamp = libs_dir / ".pom.sha256"
    if stamp.is_file() and stamp.read_text() == _digest(pom):
        return libs_dir
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Kafka's jars: apt-get install -y maven")
    if libs_dir.exists():
        shutil.rmtree(libs_dir)
    libs_dir.mkdir(parents=True)
    _run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs_dir}", "-DincludeScope=runtime"],
        "downloading Kafka's jars from Maven Central",
    )
    stamp.write_text(_digest(pom))
    return libs_dir


def ensure_anvil(npm_dir: Path) -> Path:
    """The anvil binary shipped inside the npm package @foundry-rs/anvil."""
    native = npm_dir / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    wrapper = npm_dir / "node_modules" / ".bin" / "anvil"
    for candidate in (native, wrapper):
        if candidate.is_file():
            return candidate
    if shutil.which("npm") is None:
        raise StackError("npm is needed to install anvil: apt-get install -y npm")
    npm_dir.mkdir(parents=True, exist_ok=True)
    _run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(npm_dir), ANVIL_PACKAGE],
        f"installing {ANVIL_PACKAGE} from npm",
    )
    for candidate in (native, wrapper):
        if candidate.is_file():
            return candidate
    raise StackError(f"npm installed {ANVIL_PACKAGE} but no anvil binary is under {npm_dir}")
