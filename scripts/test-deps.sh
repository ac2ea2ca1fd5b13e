#!/usr/bin/env bash
# The web app's browser tests drive Debian's Chromium (never a browser Playwright downloads).
# Install it when it is missing and we may (root with apt-get, as CI runs); otherwise say in one
# line that the browser tests will be skipped. Never fails the build.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium and chromium-driver for the browser tests..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } \
    || echo "Could not install chromium: the browser tests will be skipped."
else
  echo "No chromium and not root: the browser tests will be skipped (apt-get install chromium chromium-driver)."
fi
exit 0
