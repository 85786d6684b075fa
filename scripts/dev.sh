#!/usr/bin/env bash
# Sets partsight up on a fresh Debian/Ubuntu machine with Python 3.11, then runs the demo or the test suite.
#   bash scripts/dev.sh demo [demo options]   installs, then runs `partsight demo`
#   bash scripts/dev.sh test [pytest options] installs, then runs lint, types and every test
#   bash scripts/dev.sh setup                 installs only
#   bash scripts/dev.sh images [--base] [NAME...]  builds deploy/'s images with podman (see deploy/README.md)
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
        # setuptools' editable build prints a notice box even under -q: its output goes to a log, shown on failure
        if ! .venv/bin/pip install -q -e ".[embedded,test]" >.venv/install.log 2>&1; then
            cat .venv/install.log >&2
            echo "installing partsight into .venv failed (the output above is kept in .venv/install.log)" >&2
            exit 1
        fi
        echo "$wanted" > "$stamp"
    fi
}

# deploy/'s images, built with Debian's podman FROM a base made of Debian's own packages (no image registry)
IMAGE_TAG=${PARTSIGHT_VERSION:-latest}
BASE_SUITE=${PARTSIGHT_BASE_SUITE:-bookworm}
BASE_IMAGE=${PARTSIGHT_BASE_IMAGE:-partsight-base:$BASE_SUITE}

setup_podman() {
    # iptables: netavark sets the compose network's NAT with it; runc and cgroupfs: hosts without systemd
    apt_install podman buildah mmdebstrap podman-compose runc uidmap slirp4netns fuse-overlayfs netavark \
        aardvark-dns iptables
    if [ ! -e /etc/containers/containers.conf ]; then  # a host's own is kept
        echo "writing /etc/containers/containers.conf (runc, cgroupfs, no default ulimits)"
        printf '%s\n' "# written by partsight's scripts/dev.sh images" "[containers]" "default_ulimits = []" "" \
            "[engine]" 'runtime = "runc"' 'cgroup_manager = "cgroupfs"' | as_root tee /etc/containers/containers.conf >/dev/null
    fi
}

make_base() {  # python3 and its venv from Debian's packages, merged /usr, no docs; the host's extra CAs trusted
    local mirror=${PARTSIGHT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    local security=${PARTSIGHT_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
    local cas=${PARTSIGHT_BASE_CA_DIR-/usr/local/share/ca-certificates}
    local hooks=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
    if [ -n "$cas" ] && compgen -G "$cas/*.crt" >/dev/null; then  # a proxy's CA: pip and apt in builds trust it
        echo "the base trusts the CA certificates in $cas"
        hooks+=(--customize-hook="copy-in $cas/. /usr/local/share/ca-certificates/"
            --customize-hook='chroot "$1" update-ca-certificates >/dev/null')
    fi
    local log=${TMPDIR:-/tmp}/partsight-image-base.log
    echo "making $BASE_IMAGE with mmdebstrap ($BASE_SUITE from $mirror; log: $log)"
    as_root nice -n 10 mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates "${hooks[@]}" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/apt "$1"/var/log/dpkg.log' \
        "$BASE_SUITE" - "deb $mirror $BASE_SUITE main" "deb $mirror $BASE_SUITE-updates main" \
        "deb $security $BASE_SUITE-security main" 2>"$log" \
        | as_root podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null \
        || { tail -n 40 "$log" >&2; return 1; }
}

build_images() {  # [--base] [NAME...]: mosquitto redis bridge worker by default; also prometheus, worker-cuda
    local remake_base=0 names=() name file log started row table=()
    for name in "$@"; do
        if [ "$name" = --base ]; then remake_base=1; else names+=("$name"); fi
    done
    [ ${#names[@]} -gt 0 ] || names=(mosquitto redis bridge worker)
    setup_podman
    started=$EPOCHREALTIME
    if [ "$remake_base" = 1 ] || ! as_root podman image exists "$BASE_IMAGE"; then
        make_base
        table+=("$BASE_IMAGE $(awk "BEGIN {printf \"%.0f\", $EPOCHREALTIME - $started}")")
    fi
    for name in "${names[@]}"; do
        file=deploy/docker/$name.Dockerfile
        [ "$name" = worker ] && file=deploy/docker/worker-cpu.Dockerfile
        [ -f "$file" ] || { echo "no $file" >&2; return 2; }
        started=$EPOCHREALTIME
        log=${TMPDIR:-/tmp}/partsight-image-$name.log
        echo "building partsight-$name:$IMAGE_TAG from $file (log: $log)"
        if ! as_root nice -n 10 podman build --format docker --layers --build-arg BASE_IMAGE="$BASE_IMAGE" \
            -f "$file" -t "partsight-$name:$IMAGE_TAG" . >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            return 1
        fi
        table+=("partsight-$name:$IMAGE_TAG $(awk "BEGIN {printf \"%.0f\", $EPOCHREALTIME - $started}")")
    done
    printf '%-34s %10s %9s\n' image "size (MB)" "build (s)"
    for row in "${table[@]}"; do
        set -- $row
        printf '%-34s %10s %9s\n' "$1" "$(as_root podman image inspect --format '{{.Size}}' "$1" \
            | awk '{printf "%.0f", $1 / 1e6}')" "$2"
    done
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
        NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"  # docs/: links, anchors, nav
        # the operator page's ES modules: ESLint from package-lock.json (Debian's nodejs and npm where npm is missing)
        command -v npm >/dev/null 2>&1 || apt_install nodejs npm
        if ! cmp -s package-lock.json node_modules/.partsight-lock; then  # missing, or installed from another lock
            npm ci --no-audit --no-fund --loglevel=error
            cp package-lock.json node_modules/.partsight-lock
        fi
        npx --no-install eslint --max-warnings 0 api/static
        exec .venv/bin/python -m pytest "$@"
        ;;
    images)
        build_images "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh {demo|test|setup|images} [options]" >&2
        exit 2
        ;;
esac
