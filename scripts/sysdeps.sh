#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when running as root with apt-get available.
# Without them the tests that need them skip and say why; nothing else depends on them.
set -u
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: not root or no apt-get; tests needing ${need[*]} will be skipped" >&2
  exit 0
fi
echo "sysdeps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || echo "sysdeps: apt-get failed; tests needing ${need[*]} will be skipped" >&2
exit 0
