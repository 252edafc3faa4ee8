# Sourced by ./meridian and ./run-tests: make .venv with the project installed (editable, with the
# test extra), reinstalling only when pyproject.toml changed. Needs only python3 (3.11+) on PATH.
set -eu
root=$(cd "$(dirname "$0")" && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Meridian needs Python 3.11 or newer")'
  "$python" -m venv "$venv"
fi
stamp="$venv/.meridian-installed"
want=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "meridian: installing dependencies into .venv (once)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[test]" >&2
  echo "$want" > "$stamp"
fi
