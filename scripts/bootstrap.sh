#!/usr/bin/env bash
# Everything `make demo` and `make test` need on a fresh machine of this kind:
# system packages (Java 17, Maven, PostgreSQL server binaries, chromium, Go, prometheus),
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
# Go builds the pinned tools below.
command -v go >/dev/null || need_apt+=(golang-go)
# Debian's `prometheus` ships promtool (alert-rule tests) and the server devstack starts
# with its own config and data dir; installed without recommends, its own service unused.
need_bare=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || need_bare+=(prometheus)

if ((${#need_apt[@]} + ${#need_bare[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing system packages: ${need_apt[*]} ${need_bare[*]} (install them with apt-get)" >&2
        exit 1
    fi
    echo "installing system packages: ${need_apt[*]} ${need_bare[*]}"
    apt-get update -qq
    ((${#need_apt[@]})) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    if ((${#need_bare[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_bare[@]}" >/dev/null
        # The package's postinst may start its own service where an init system runs; we start ours ourselves.
        command -v systemctl >/dev/null && systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .tools/bin/uv ]]; then
    "$PYTHON" -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check "uv==0.13.8"
fi
# --frozen: install exactly uv.lock, the one lockfile every service runs.
UV_PROJECT_ENVIRONMENT=.venv .tools/bin/uv sync --frozen --quiet --python "$PYTHON"

# --- Pinned Go tools, from the Go module proxy into .tools/bin; only when that version is missing ---
# kustomize and kubeconform: tests/deploy renders and validates deploy/k8s. stripe-mock: Stripe's own
# API mock for payout's Stripe adapter tests. A fresh install (download + compile, in parallel) took
# 42 s here; about 2 min with an empty Go build cache.
go_tool() {  # go_tool NAME MODULE VERSION
    local stamp=".tools/bin/.$1-$3"
    [[ -x .tools/bin/$1 && -e $stamp ]] && return 0
    GOBIN="$PWD/.tools/bin" go install "$2@$3" && touch "$stamp"
}
go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 v5.7.1 & kustomize=$!
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform v0.7.0 & kubeconform=$!
go_tool stripe-mock github.com/stripe/stripe-mock v0.203.0 & stripe_mock=$!
wait "$kustomize"; wait "$kubeconform"; wait "$stripe_mock"

# Last: make re-runs this script until every step above has succeeded.
touch .venv/.synced
