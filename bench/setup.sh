#!/usr/bin/env bash
# Tools for bench/compare.py on Debian: rsyslog from its package, and
# syslog-ng unpacked into bench/.tools/ (the two Debian packages conflict, so
# syslog-ng is not installed system-wide; only its libraries are).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends rsyslog libivykis0 libnet1 libjson-c5 libwrap0 libglib2.0-0 libpcre3
mkdir -p "$here/.tools"
cd "$here/.tools"
rm -f syslog-ng-core_*.deb
apt-get download syslog-ng-core
rm -rf syslog-ng
dpkg -x syslog-ng-core_*.deb syslog-ng
LD_LIBRARY_PATH="$here/.tools/syslog-ng/usr/lib/syslog-ng" "$here/.tools/syslog-ng/usr/sbin/syslog-ng" --version | head -1
