#!/usr/bin/env bash
# Sets partsight up on a fresh Debian/Ubuntu machine with Python 3.11, then runs the demo or the test suite.
#   bash scripts/dev.sh demo [demo options]   installs, then runs `partsight demo`
#   bash scripts/dev.sh test [pytest options] installs, then runs lint, types and every test
#   bash scripts/dev.sh setup                 installs only
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "need root (or sudo) for: $*" >&2; return 1
    fi
}

apt_install() {  # installs the Debian packages that are not there yet
    local missing=()
    for package in "$@"; do
        # a removed package keeps its config files and dpkg -s still succeeds: ask for the installed state
        [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" = "install ok installed" ] || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_python() {
    if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    local stamp=.venv/.partsight-installed
    local wanted
    wanted=$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        echo "installing partsight and its Python dependencies into .venv"
        .venv/bin/pip install -q --upgrade pip
        # shellcheck disable=SC2086
        .venv/bin/pip install -q $TORCH_PINS
        .venv/bin/pip install -q -e ".[embedded,test]"
        echo "$wanted" > "$stamp"
    fi
}

command=${1:-demo}
shift || true
case "$command" in
    setup)
        setup_python
        ;;
    demo)
        # the real product photos; without them the demo uses the sample shipped with partsight
        apt_install dataset-fashion-mnist || echo "dataset-fashion-mnist not installed: using the shipped sample"
        setup_python
        exec .venv/bin/partsight demo "$@"
        ;;
    test)
        # tests start their own Mosquitto and Redis from these binaries; promtool checks metric names
        # chromium: the operator page's browser test (Playwright drives Debian's build; nothing is downloaded)
        apt_install mosquitto redis-server prometheus dataset-fashion-mnist chromium
        setup_python
        .venv/bin/ruff check .
        .venv/bin/ruff format --check .
        .venv/bin/mypy api broker worker models partsight
        exec .venv/bin/python -m pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh {demo|test|setup} [options]" >&2
        exit 2
        ;;
esac
