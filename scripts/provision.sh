#!/usr/bin/env bash
# Install the system packages the test suite runs against (real servers, not mocks), when missing.
# Called by `make test` (and so by .ci/run). Idempotent: when everything is there it is one dpkg
# query. The servers themselves are started and stopped by the tests (tests/conftest.py starts a
# throwaway PostgreSQL cluster with pg_ctl; the syslog tests start rsyslogd), so nothing is started
# here and no system service is touched.
#
# Usage: scripts/provision.sh           install what is missing (root), or say what to install
#        scripts/provision.sh --check   only report what is missing (exit 1 if anything is)
set -euo pipefail

# === Debian packages the tests need: add new ones here (one place) ===============================
PACKAGES=(
  postgresql      # initdb/pg_ctl for the store tests' throwaway cluster (tests/conftest.py)
  rsyslog         # tests/test_syslog.py
  rsyslog-gnutls  # tests/test_syslog_tls.py (rsyslog's TLS driver)
  chromium        # tests/test_demo.py renders report.html headless
  openjdk-17-jre-headless  # Java 17 for PyFlink (tests/test_flink.py; the venv is the Makefile's .venv-flink)
)
# ===================================================================================================

check_only=0
[[ "${1:-}" == "--check" ]] && check_only=1

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "provision: not a Debian system; make sure the equivalents of these are installed: ${PACKAGES[*]}" >&2
  exit 0
fi

missing() {
  # dpkg-query prints "<package> <status>" for known packages and complains about unknown ones
  local installed
  installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null \
              | awk '$2 == "installed" {print $1}' || true)
  for p in "${PACKAGES[@]}"; do
    grep -qx -- "$p" <<<"$installed" || echo "$p"
  done
}

mapfile -t todo < <(missing)
[[ ${#todo[@]} -eq 0 ]] && exit 0

if [[ $check_only -eq 1 ]]; then
  echo "provision: missing Debian packages: ${todo[*]}" >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "provision: the tests need Debian packages that are not installed; run: sudo apt-get install -y ${todo[*]}" \
       "(or: sudo $0)" >&2
  exit 1
fi

echo "provision: installing ${todo[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=600 -q)
apt-get "${apt_opts[@]}" update -qq
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${todo[@]}" >/dev/null

mapfile -t still < <(missing)
if [[ ${#still[@]} -ne 0 ]]; then
  echo "provision: apt-get did not install: ${still[*]}" >&2
  exit 1
fi
