#!/usr/bin/env bash
# What the tests need from Debian besides Python packages, installed when missing and we may
# (root with apt-get, as CI runs); otherwise one line says which tests will be skipped. Never
# fails the build.
# - chromium: the web app's browser tests drive Debian's Chromium (never a browser Playwright downloads).
# - postgresql: the relay's PostgreSQL tests start their own cluster with its initdb and postgres
#   (tests/pg_support.py); only the server binaries are used, the package's own cluster is not.
# - nginx: tests/test_relay_ops_deploy.py runs deploy/nginx-relay.conf in front of two relays, in a
#   folder of its own on a free port (the package's own service is not used).
# - systemd: tests/test_daemon_install.py checks the unit `daemon install` writes with its
#   systemd-analyze verify (nothing is started; no systemd needs to run).
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's ${missing[*]} for the tests..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } \
    || echo "Could not install ${missing[*]}: the tests that need them will be skipped."
else
  echo "Missing ${missing[*]} and not root: the tests that need them will be skipped (apt-get install ${missing[*]})."
fi
exit 0
