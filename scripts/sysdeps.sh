#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when running as root with apt-get available.
# Without them the tests that need them skip and say why; nothing else depends on them.
#   openssh-server/-client, rsync, netcat-openbsd: the real `ray up`/`submit`/`down` launch-flow test
#     (sshd on a loopback port; the cluster launcher copies files with rsync and reaches that port
#     through an `nc` proxy command; tests/cluster/)
#   chromium: the report screenshot test
set -u
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
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
