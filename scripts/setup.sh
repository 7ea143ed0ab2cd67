#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, then the virtualenv.
# Re-running it does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for pkg in dovecot-imapd dovecot-lmtpd postfix gnupg; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
# Debian's own Python needs python3-venv for "python3 -m venv".
"$PY" -c "import ensurepip" >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test,sandbox]'
    touch "$stamp"
fi

# The Element-grade Matrix client of the tests (tests/element): matrix-js-sdk with its Rust
# crypto, exactly as pinned by package-lock.json. Installed again only when the lock changed.
element=tests/element
if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
        echo "setup: Node $(node --version) is too old for matrix-js-sdk 37.5 (needs 20);" \
            "the Element-grade tests will fail" >&2
    elif [ ! -f "$element/node_modules/.package-lock.json" ] \
        || [ "$element/package-lock.json" -nt "$element/node_modules/.package-lock.json" ]; then
        (cd "$element" && npm ci --no-audit --no-fund --loglevel=error)
        touch "$element/node_modules/.package-lock.json"
    fi
else
    echo "setup: node/npm not found; the Element-grade tests need Node 20 and npm" >&2
fi
