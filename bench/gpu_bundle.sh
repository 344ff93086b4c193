#!/usr/bin/env bash
# Build what an air-gapped GPU machine needs to run bench/gpu_paper_size.py, into one folder that
# travels with the repository (default bench/out/gpu_bundle, ignored by git), and print its size:
#
#   wheels/                the Python packages the machine lacks, as wheels for its Python (3.12,
#                          x86-64 Linux), plus a wheel of calib_sweep itself
#   tokenizer-smollm2/     the embedded SmolLM2 tokenizer's files (for the random-weight configs;
#                          the model weights are not carried)
#
# Fails if the folder exceeds LIMIT_MIB (60: uploads are limited to 64 MiB with the repository), or if
# the bench's imports need a distribution that is neither on the machine (DEVICE_HAS) nor bundled.
#
#   bench/gpu_bundle.sh                      # here, with network to PyPI and the dev venv (.venv)
#   # on the GPU machine (no package index), from the repository root:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-packages bench/out/gpu_bundle/wheels/*.whl
#   PYTHONPATH=/tmp/site-packages python3 bench/gpu_paper_size.py
# (keep "site-packages" in the folder's name: dill, which datasets uses to fingerprint, pickles modules
# from a folder not so named by value, and fails on pyarrow's types there.)
#
# Settings (environment): PYTHON (dev venv's python: the versions of packages pyproject.toml does not
# pin come from it), DEVICE_PYTHON (3.12), BUNDLE (output folder), LIMIT_MIB (60), EXTRA (more
# requirements to bundle, e.g. EXTRA="lm-eval==0.4.13 ..." for zero-shot evaluation, which the bench
# does not need).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
BUNDLE=${BUNDLE:-$ROOT/bench/out/gpu_bundle}
LIMIT_MIB=${LIMIT_MIB:-60}
EXTRA=${EXTRA:-}

# What the machine lacks and the bench imports (edit here). Found by importing what
# bench/gpu_paper_size.py imports in the dev venv and removing what the machine's image has
# (DEVICE_HAS below; .library/device/KINDS.md, read 2026-11-17: torch 2.11, transformers 5.17, ...).
# lm-eval is not needed: the bench evaluates no zero-shot task (add it with EXTRA if a job must).
NEEDED="llmcompressor compressed-tensors hydra-core omegaconf antlr4-python3-runtime loguru
        pydantic pydantic-core annotated-types typing-inspection datasets dill multiprocess"

# Distributions the GPU machine's image already has (the ones the bench's imports reach; edit here).
DEVICE_HAS="torch transformers tokenizers safetensors huggingface-hub hf-xet numpy pandas pyarrow fsspec
        xxhash filelock packaging pyyaml requests urllib3 idna certifi charset-normalizer tqdm regex jinja2
        markupsafe psutil accelerate pillow nvidia-ml-py typing-extensions sympy mpmath networkx scipy
        scikit-learn joblib threadpoolctl rich pygments markdown-it-py mdurl click typer shellingham httpx
        httpcore h11 anyio attrs protobuf narwhals python-dateutil six cloudpickle colorama
        setuptools triton annotated-doc"

# Imported when present, not needed (each import is guarded by its importer).
OPTIONAL="chardet pytz googleapis-common-protos zstandard"

say() { printf '%s\n' "$*"; }
norm() { tr 'A-Z_.' 'a-z--' <<<"$1"; }

[ -x "$PYTHON" ] || { say "gpu_bundle: no python at $PYTHON (set PYTHON=...)" >&2; exit 2; }
cd "$ROOT"

# 1. Does the bench import anything that is neither on the machine nor in the bundle?
say "checking the bench's imports against DEVICE_HAS + NEEDED ..."
"$PYTHON" - "$DEVICE_HAS $NEEDED $OPTIONAL calib-sweep" <<'EOF'
import importlib.metadata as md, os, re, sys
known = {re.sub(r"[-_.]+", "-", n).lower() for n in sys.argv[1].split()}
sys.path.insert(0, "bench")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
before = set(sys.modules)
import common  # noqa: F401  (what bench/gpu_paper_size.py imports, and what it calls lazily)
from calib_sweep import methods, models  # noqa: F401
from calib_sweep.evaluation import perplexity  # noqa: F401
from calib_sweep.methods.llmc import build_recipe, run_oneshot  # noqa: F401
from datasets import Dataset  # noqa: F401
from llmcompressor import oneshot  # noqa: F401
from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier  # noqa: F401
from llmcompressor.modifiers.quantization import GPTQModifier  # noqa: F401
import llmcompressor.pipelines.sequential  # noqa: F401
dists = md.packages_distributions()
used = {re.sub(r"[-_.]+", "-", d).lower() for m in set(sys.modules) - before for d in dists.get(m.split(".")[0], [])}
missing = sorted(used - known)
if missing:
    sys.exit(f"gpu_bundle: the bench imports {missing}: add each to NEEDED (bundle it) or DEVICE_HAS (the machine has it)")
print(f"  {len(used)} distributions imported; all on the machine or bundled")
EOF

# 2. Wheels, at the dev venv's versions (= pyproject.toml's pins where it pins).
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
pip_() { "$PYTHON" -m pip --disable-pip-version-check -q "$@"; }
for name in $NEEDED; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    pin=$(grep -ioE "\"$name==[^\"]+\"" pyproject.toml | tr -d '"' | cut -d= -f3 || true)
    if [ -n "$pin" ] && [ "$pin" != "$version" ]; then
        say "gpu_bundle: pyproject.toml pins $name==$pin but $PYTHON has $version" >&2; exit 2
    fi
    # A wheel built for the machine's Python where PyPI has one; else built here (pure Python only).
    if ! pip_ download --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
            "${PLATFORMS[@]}" -d "$BUNDLE/wheels" "$name==$version" 2>/dev/null; then
        pip_ wheel --no-deps -w "$BUNDLE/wheels" "$name==$version"
    fi
done
for req in $EXTRA; do
    pip_ download --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
        "${PLATFORMS[@]}" -d "$BUNDLE/wheels" "$req" 2>/dev/null || pip_ wheel --no-deps -w "$BUNDLE/wheels" "$req"
done
# calib_sweep itself, built from a copy of the working tree (so no build/ or *.egg-info lands here)
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp pyproject.toml README.md "$src/"
tar --exclude=__pycache__ -cf - calib_sweep | tar -xf - -C "$src"
pip_ wheel --no-deps -w "$BUNDLE/wheels" "$src"

# Every wheel must install on CPython $DEVICE_PYTHON: pure (py3-none-any) or tagged for it.
tag="cp${DEVICE_PYTHON/./}"
for whl in "$BUNDLE"/wheels/*.whl; do
    base=$(basename "$whl" .whl)
    IFS=- read -r -a parts <<<"$base"
    n=${#parts[@]}; py=${parts[n-3]}; abi=${parts[n-2]}; plat=${parts[n-1]}
    if ! { [ "$plat" = any ] && [ "$abi" = none ] && [[ "$py" =~ (^|\.)py3($|\.) ]]; } \
       && ! [[ "$py" =~ (^|\.)(${tag}|py${DEVICE_PYTHON/./})($|\.) || "$abi" = abi3 ]]; then
        say "gpu_bundle: $(basename "$whl") does not install on CPython $DEVICE_PYTHON x86-64" >&2; exit 1
    fi
done

# 3. The SmolLM2 tokenizer's files (fetched and converted once here if the cache lacks them).
tokdir=$("$PYTHON" - <<'EOF'
from omegaconf import OmegaConf
from calib_sweep import models
print(models.model_path(OmegaConf.load("calib_sweep/conf/model/smollm2_135m.yaml")))
EOF
)
mkdir -p "$BUNDLE/tokenizer-smollm2"
for f in tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
    [ -f "$tokdir/$f" ] && cp "$tokdir/$f" "$BUNDLE/tokenizer-smollm2/"
done

# 4. Size.
say ""
say "bundle $BUNDLE:"
(cd "$BUNDLE" && find . -type f -printf '%s\t%P\n' | sort -k2 | awk -F'\t' '{printf "  %9.1f KiB  %s\n", $1/1024, $2}')
bytes=$(find "$BUNDLE" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.2f", b/1048576}')
say "total: $bytes bytes = $mib MiB in $(find "$BUNDLE" -type f | wc -l) files (limit $LIMIT_MIB MiB)"
if awk -v b="$bytes" -v l="$LIMIT_MIB" 'BEGIN {exit !(b > l*1048576)}'; then
    say "gpu_bundle: over the $LIMIT_MIB MiB limit" >&2; exit 1
fi
say ""
say "on the GPU machine, from the repository root (carry bench/out/gpu_bundle):"
say "  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-packages bench/out/gpu_bundle/wheels/*.whl"
say "  PYTHONPATH=/tmp/site-packages python3 bench/gpu_paper_size.py"
