#!/usr/bin/env bash
# Everything `make demo` and `make test` need on a fresh machine of this kind:
# system packages (Java 17, Maven, PostgreSQL server binaries) and the locked
# Python environment in .venv (uv, from PyPI, into .tools).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v pg_ctl >/dev/null || need_apt+=(postgresql)
# Notify's customer-page test drives Debian's chromium through Playwright (never
# `playwright install`: no browser downloads here), with a CJK font so the zh-CN
# page renders legibly in the test's screenshot.
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
[[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]] || need_apt+=(fonts-wqy-zenhei)

if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing system packages: ${need_apt[*]} (install them, e.g. apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
    echo "installing system packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .tools/bin/uv ]]; then
    "$PYTHON" -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check "uv==0.13.8"
fi
# --frozen: install exactly uv.lock, the one lockfile every service runs.
UV_PROJECT_ENVIRONMENT=.venv .tools/bin/uv sync --frozen --quiet --python "$PYTHON"
touch .venv/.synced
