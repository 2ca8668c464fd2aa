#!/usr/bin/env bash
# The GPU check (see benchmarks/gpu_check.py and docs/gpu.md): one table, also written as JSON.
#
#   benchmarks/gpu_check.sh [--out DIR] [--budget S] [--only a,b] [--skip a,b]   # one GPU, about 10 minutes
#   benchmarks/gpu_check.sh --quick [--out DIR]                                  # CPU smoke run (CI)
#   benchmarks/gpu_check.sh --fetch-wheels                                       # where PyPI is reachable
#
# Setup: the run uses the machine's own python3 and torch (a GPU machine's CUDA build is never replaced).
# The project's other imports (yacs, PyAV, decord, termcolor) are checked first; those that are missing
# are installed from wheels in .whl/ into a private folder put on PYTHONPATH, without any network; a module
# with no wheel there skips only the sections that need it (model, batch and compile sections need none). A
# GPU machine that cannot reach PyPI gets those wheels from a machine that can:
# `benchmarks/gpu_check.sh --fetch-wheels` saves them into .whl/ (ignored by git; about 50 MB) for
# GPU_CHECK_PYTHON (default 3.12: set it to the GPU machine's Python); copy .whl/ along with the repository.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

# the python modules a bare GPU machine may lack (their wheel files start with the same names)
MODULES=(yacs av decord termcolor)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    version=${GPU_CHECK_PYTHON:-3.12}
    # the versions installed here (what the test suite runs with), else requirements.txt's pins
    reqs=$("$PYTHON" - "${MODULES[@]}" <<'EOF'
import importlib.metadata as md, sys
fallback = {'yacs': 'yacs==0.1.8', 'av': 'av>=12.0', 'decord': 'decord==0.6.0', 'termcolor': 'termcolor>=2.3'}
out = []
for name in sys.argv[1:]:
    try:
        out.append(f'{name}=={md.version(name)}')
    except md.PackageNotFoundError:
        out.append(fallback[name])
print(' '.join(out))
EOF
)
    mkdir -p .whl
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
             manylinux2010_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
    # shellcheck disable=SC2086  # one word per requirement
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        "${platforms[@]}" -d .whl $reqs
    ls -l .whl
    exit 0
fi

missing=$("$PYTHON" - "${MODULES[@]}" <<'EOF'
import importlib.util, sys
print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
)
if [[ -n "$missing" ]]; then
    site=${TMPDIR:-/tmp}/gpu_check_site
    wheels=()
    installed=()
    for m in $missing; do
        found=(.whl/"$m"-*.whl)
        if [[ ! -e "${found[0]}" ]]; then
            # the sections that need it are skipped (gpu_check.py names them); the others still run
            echo "gpu_check.sh: warning: python module '$m' is missing and there is no .whl/$m-*.whl;" \
                 "sections that need it are skipped ('benchmarks/gpu_check.sh --fetch-wheels' where PyPI is" \
                 "reachable saves the wheels into .whl/)" >&2
            continue
        fi
        wheels+=("${found[-1]}")
        installed+=("$m")
    done
    if [[ ${#wheels[@]} -gt 0 ]]; then
        start=$SECONDS
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "${wheels[@]}"
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        echo "gpu_check.sh: installed ${installed[*]} from .whl into $site in $((SECONDS - start)) s"
    fi
fi

exec "$PYTHON" -m benchmarks.gpu_check "$@"
