#!/usr/bin/env bash
# Installs the host programs that pods run until berth runs real images (a pod with image
# nginx runs the host's nginx, busybox's wget and nslookup are the host's): Debian's nginx,
# with its service kept from starting (policy-rc.d denies it, and systemd is told not to start
# it at boot) so the node itself runs no nginx, and wget, curl, dig and nslookup. Run as root; idempotent. scripts/run.sh
# and scripts/deps.sh call it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in wget curl ca-certificates dnsutils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! dpkg-query -W -f='${Status}' nginx 2>/dev/null | grep -q "install ok installed"; then
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nginx
  if [[ -n $made_policy ]]; then rm -f "$policy"; trap - EXIT; fi
  if [[ -d /run/systemd/system ]]; then systemctl disable --now nginx; fi
fi
