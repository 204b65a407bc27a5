#!/usr/bin/env bash
# Installs what the local stack and the tests need, once: a Python venv with moto, cfn-lint,
# SAM CLI, cargo-lambda and Schemathesis (re-run only when requirements-dev.txt changes), checkov
# in its own venv under .local/ (requirements-checkov.txt), the OpenAPI linter, Redocly CLI,
# under .local/ (re-run only when its pinned version changes), and with `--browser` Chromium and
# chromedriver (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
stamp="$VENV/.requirements.sha256"
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo is required (https://rustup.rs)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV" >&2
  python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "bootstrap: installing requirements-dev.txt into $VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
# checkov in a venv of its own (requirements-checkov.txt says why), re-run only when its pin changes.
CHECKOV_VENV=${CHECKOV_VENV:-.local/checkov}
checkov_stamp="$CHECKOV_VENV/.requirements.sha256"
checkov_want=$(sha256sum requirements-checkov.txt | cut -d' ' -f1)
# A venv made at another path (a moved checkout) has scripts whose interpreter is gone.
checkov_interpreter=$(head -n1 "$CHECKOV_VENV/bin/checkov" 2>/dev/null | sed 's/^#!//' || true)
if [ "$(cat "$checkov_stamp" 2>/dev/null || true)" != "$checkov_want" ] || [ ! -x "$checkov_interpreter" ]; then
  echo "bootstrap: installing requirements-checkov.txt into $CHECKOV_VENV" >&2
  mkdir -p "$(dirname "$CHECKOV_VENV")"
  python3 -m venv --clear "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-checkov.txt
  echo "$checkov_want" > "$checkov_stamp"
fi
REDOCLY_CLI_VERSION=2.77.0
redocly_dir=.local/redocly
if [ "$(cat "$redocly_dir/.version" 2>/dev/null || true)" != "$REDOCLY_CLI_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "bootstrap: installing Node.js and npm" >&2
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "bootstrap: installing @redocly/cli@$REDOCLY_CLI_VERSION into $redocly_dir" >&2
  mkdir -p "$redocly_dir"
  npm install --prefix "$redocly_dir" --no-audit --no-fund --loglevel=error \
    "@redocly/cli@$REDOCLY_CLI_VERSION" >/dev/null
  echo "$REDOCLY_CLI_VERSION" > "$redocly_dir/.version"
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
# `--browser` (scripts/test.sh): the signup page's browser tests drive headless Chromium through
# chromedriver, installed with apt-get wherever this can (root, or passwordless sudo). In CI
# (`.ci/run` sets CI=true) a failed install fails here, and a missing browser fails the tests;
# elsewhere the tests that need it do not run and `make test` ends by listing them.
if [ "${1:-}" = "--browser" ] &&
  ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
  fi
  if [ "$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: chromium and chromedriver are missing and cannot be installed here (apt-get as root or with passwordless sudo); the browser tests will not run" >&2
    if [ "${CI:-}" = "true" ]; then exit 1; fi
  else
    echo "bootstrap: installing chromium and chromedriver (apt-get)" >&2
    if ! { $sudo apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
      echo "bootstrap: installing chromium and chromedriver failed; the browser tests will not run" >&2
      if [ "${CI:-}" = "true" ]; then exit 1; fi
    fi
  fi
fi
