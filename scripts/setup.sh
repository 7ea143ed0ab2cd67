#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, then the virtualenv.
# Re-running it does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for pair in dovecot:dovecot-imapd dovecot:dovecot-lmtpd postfix:postfix gpg:gnupg; do
    bin=${pair%%:*}; pkg=${pair#*:}
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then need_pkgs+=("$pkg"); fi
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test,sandbox]'
    touch "$stamp"
fi
