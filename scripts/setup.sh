#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, then the virtualenv.
# Re-running it does nothing that is already done.
#
# The interpreter is Debian's own python3.11 (/usr/bin/python3.11): Debian backports the
# security fixes of the email and HTML modules into it, and this script keeps it upgraded.
# A python3.11 found first on PATH (pyenv, a hand-built one) may lack those fixes, so it
# is used only when PYTHON names it explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
    echo "setup: installing Debian packages: $*"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"
}

PY=${PYTHON:-/usr/bin/python3.11}
need_pkgs=()
for pkg in dovecot-imapd dovecot-lmtpd postfix gnupg openssl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ -z "${PYTHON:-}" ]; then
    for pkg in python3.11 python3.11-venv; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
    done
elif ! "$PY" -c "import ensurepip" >/dev/null 2>&1; then
    echo "setup: $PY cannot create virtualenvs (no ensurepip)" >&2
    exit 1
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    apt_install "${need_pkgs[@]}"
fi

# Security upgrades of Debian's interpreter, checked at most once a day (and whenever the
# virtualenv is made anew), so that a repeated `make test` stays fast.
checked=.venv/.python-upgraded
if [ -z "${PYTHON:-}" ] && { [ ! -f "$checked" ] || [ -n "$(find "$checked" -mmin +1440)" ]; }; then
    echo "setup: checking Debian's python3.11 for security upgrades"
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --only-upgrade \
        python3.11 python3.11-minimal libpython3.11-stdlib libpython3.11-minimal python3.11-venv
    mkdir -p .venv && touch "$checked"
fi

# A virtualenv made with another interpreter is made anew.
want=$("$PY" -c 'import sys; print(sys.base_prefix, sys.version.split()[0])')
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: the virtualenv was made with another Python; making it anew"
    rm -rf .venv/bin .venv/lib .venv/include .venv/pyvenv.cfg .venv/lib64 "$stamp"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test,sandbox]'
    echo "$want" >"$stamp"
fi
