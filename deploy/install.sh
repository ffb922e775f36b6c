#!/usr/bin/env bash
# Installs everything sidstream needs on a fresh Debian machine, from the project's own files:
#   - Java 17+ and Maven (apt, only when missing and running as root),
#   - Debian's redis-server (apt, same rule) for the Feast Redis online store,
#   - Debian's chromium and chromium-driver (apt, same rule) for the live page's browser test,
#   - a virtual environment .venv with the pinned Python stack (pyproject.toml + deploy/constraints.txt),
#   - the Kafka broker jars, resolved once from Maven Central into ~/.cache/sidstream (outside the repo).
# Idempotent: a second run only checks and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[install] %s\n' "$*"; }
started=$(date +%s)

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "missing: $* (not root or no apt-get: install it yourself)"; return 1
  fi
  if [ -z "${SIDSTREAM_APT_UPDATED:-}" ]; then
    say "apt-get update"; DEBIAN_FRONTEND=noninteractive apt-get update -qq; export SIDSTREAM_APT_UPDATED=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
command -v redis-server >/dev/null || apt_install redis-server || say "redis-server unavailable: Redis tests will be skipped"
# a real browser for the live page's test: Debian's chromium and its chromedriver (no browser download at run time)
command -v chromedriver >/dev/null || apt_install chromium chromium-driver \
  || say "chromium unavailable: the browser test will be skipped"

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "[install] error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || { say "creating .venv with $PYTHON"; "$PYTHON" -m venv .venv; }
stamp=.venv/.sidstream-installed
want=$(cat pyproject.toml deploy/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing the Python stack into .venv (torch is a ~3 GB download on a fresh machine)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --progress-bar off -c deploy/constraints.txt -e .
  echo "$want" > "$stamp"
else
  say "Python stack up to date"
fi

# Resolve the broker jars now, so neither `sidstream up` nor the tests pay for it later.
.venv/bin/python -c 'from deploy.localstack import LocalStack; LocalStack(log=lambda m: print("[install]", m)).kafka_jars()'
say "done in $(( $(date +%s) - started )) s; installed size: $(du -sh .venv | cut -f1) (.venv), $(du -sh "${SIDSTREAM_CACHE_DIR:-$HOME/.cache/sidstream}" | cut -f1) (Kafka jars)"
