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

# --- stripe-mock (payout's Stripe adapter tests) ----------------------------
# Stripe's own API mock server, built from the Go module proxy into .tools/bin.
# Only when missing; needs `go` (apt golang-go if absent, as root).
STRIPE_MOCK_VERSION=v0.203.0
if [[ ! -x .tools/bin/stripe-mock ]]; then
    if ! command -v go >/dev/null; then
        if [[ $(id -u) -ne 0 ]]; then
            echo "missing go (apt-get install golang-go) to build stripe-mock" >&2
            exit 1
        fi
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
    fi
    echo "building stripe-mock ${STRIPE_MOCK_VERSION}"
    GOBIN="$PWD/.tools/bin" go install "github.com/stripe/stripe-mock@${STRIPE_MOCK_VERSION}"
fi
