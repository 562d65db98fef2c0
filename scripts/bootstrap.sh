#!/usr/bin/env bash
# Everything `make demo` and `make test` need on a fresh machine of this kind:
# system packages (Java 17, Maven, PostgreSQL server binaries, chromium, prometheus),
# the locked Python environment in .venv (uv, from PyPI, into .tools), and pinned
# Go tools built from the Go module proxy (kustomize, kubeconform, stripe-mock).
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

# --- Kubernetes manifest tools (tests/deploy renders and validates deploy/k8s) ---
# Pinned, from the Go module proxy, into .tools/bin; only when missing. A fresh
# install (download + compile, both in parallel) took 42 s here; 1 min 53 s with an empty Go build cache.
KUSTOMIZE_VERSION=v5.7.1
KUBECONFORM_VERSION=v0.7.0
if ! command -v go >/dev/null && [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
fi
go_tool() {  # go_tool NAME MODULE VERSION: install .tools/bin/NAME unless that version is there
    local stamp=".tools/bin/.$1-$3"
    [[ -x .tools/bin/$1 && -e $stamp ]] && return 0
    GOBIN="$PWD/.tools/bin" go install "$2@$3" && touch "$stamp"
}
if command -v go >/dev/null; then
    go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" &
    go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" &
    wait -n && wait -n
else
    # Everything else works without them; only tests/deploy needs them (and says so).
    echo "warning: go is missing, so kustomize and kubeconform are not installed (apt-get install golang-go)" >&2
fi

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

# --- Prometheus and promtool (alert-rule tests, the local Prometheus of devstack) ---
# Debian's `prometheus` package ships both binaries. devstack starts its own
# prometheus with its own config and data dir; the package's systemd unit is not used.
# Only when missing, apt as root.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing prometheus/promtool (apt-get install prometheus)" >&2
        exit 1
    fi
    echo "installing prometheus (Debian package, for promtool and the local Prometheus)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package's postinst may start its own service where an init system runs; we start ours ourselves.
    command -v systemctl >/dev/null && systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# Last: make re-runs this script until every step above has succeeded.
touch .venv/.synced
