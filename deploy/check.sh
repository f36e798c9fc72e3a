#!/usr/bin/env bash
# Static checks of the deployment files, as far as a machine without VMs
# allows:
#   - systemd-analyze verify of the units in deploy/systemd (in a scratch
#     root holding the distribution's units and a stand-in tailor binary);
#   - cloud-init schema of deploy/cloud-init/*.yaml, and sh -n of their
#     scripts;
#   - the copies of deploy/tailor.env and deploy/systemd/* inside
#     deploy/cloud-init/tailor.yaml are identical to the files;
#   - docker compose config of docker-compose.yml, alone and with
#     deploy/compose.scratch.yml (when compose is installed);
#   - bash -n of the deploy scripts, go vet of deploy/etcd and deploy/helper.
#
#   bash deploy/check.sh
#
# Installs systemd and cloud-init from Debian's packages if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
fails=0
ok() { printf 'check: ok    %s\n' "$*"; }
bad() {
  printf 'check: FAIL  %s\n' "$*"
  fails=$((fails + 1))
}

need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v cloud-init >/dev/null || need+=(cloud-init)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "check: installing ${need[*]}"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- systemd units ---------------------------------------------------------
root=$tmp/root
mkdir -p "$root/etc/systemd/system" "$root/lib/systemd" "$root/usr/local/bin" "$root/bin"
cp -a /lib/systemd/system "$root/lib/systemd/"
cp /bin/sh "$root/bin/sh"
printf '#!/bin/sh\n' >"$root/usr/local/bin/tailor"
chmod 0755 "$root/usr/local/bin/tailor"
cp deploy/systemd/*.service "$root/etc/systemd/system/"
units=()
for f in deploy/systemd/*.service; do
  u=$(basename "$f")
  [[ $u == *@.service ]] && u=${u/@.service/@0.service}
  units+=("$u")
done
# any output at all (an unknown key, a bad value) is a failure
if out=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1) && [ -z "$out" ]; then
  ok "systemd-analyze verify ${units[*]}"
else
  bad "systemd-analyze verify: $out"
fi

# tailor-host.service's script, as systemd passes it to sh
if python3 - deploy/systemd/tailor-host.service >"$tmp/host.sh" <<'EOF'; then
import shlex, sys
s = open(sys.argv[1]).read()
cmd = s[s.index("ExecStart=") + len("ExecStart="):s.index("\n\n", s.index("ExecStart="))]
argv = shlex.split(cmd.replace("\\\n", " "))
print(argv[2].replace("$$", "$").replace("\\\\", "\\"))
EOF
  sed -i 's#/run/tailor/#'"$tmp"'/#' "$tmp/host.sh"
  if sh -n "$tmp/host.sh" && TAILOR_HOST_IP=192.0.2.7 sh -e "$tmp/host.sh" >/dev/null &&
    grep -qx 'TAILOR_HOST_IP=192.0.2.7' "$tmp/host.env"; then
    ok "tailor-host.service script (TAILOR_HOST_IP=192.0.2.7 gives $(cat "$tmp/host.env"))"
  else
    bad "tailor-host.service script"
  fi
else
  bad "tailor-host.service: no ExecStart"
fi

# --- cloud-init ------------------------------------------------------------
for f in deploy/cloud-init/*.yaml; do
  if out=$(cloud-init schema --config-file "$f" 2>&1); then
    ok "cloud-init schema $f"
  else
    bad "cloud-init schema $f: $out"
  fi
done
# runcmd scripts parse; write_files copies match their sources
if python3 - "$tmp" >"$tmp/ci.out" 2>&1 <<'EOF'; then
import os, subprocess, sys, yaml
tmp = sys.argv[1]
errs = []
sources = {"/etc/tailor/tailor.env": "deploy/tailor.env"}
for f in os.listdir("deploy/systemd"):
    sources["/etc/systemd/system/" + f] = "deploy/systemd/" + f
for name in sorted(os.listdir("deploy/cloud-init")):
    path = "deploy/cloud-init/" + name
    doc = yaml.safe_load(open(path))
    for i, cmd in enumerate(doc.get("runcmd", [])):
        if isinstance(cmd, list) and cmd[:2] == ["sh", "-ec"]:
            p = subprocess.run(["sh", "-n"], input=cmd[2], text=True, capture_output=True)
            if p.returncode:
                errs.append(f"{path}: runcmd {i}: {p.stderr.strip()}")
    copied = {w["path"]: w.get("content", "") for w in doc.get("write_files", [])}
    for dst, src in sources.items():
        if dst in copied and copied[dst] != open(src).read():
            errs.append(f"{path}: {dst} differs from {src}")
    if name == "tailor.yaml":
        for dst in sources:
            if dst not in copied:
                errs.append(f"{path}: no copy of {sources[dst]} at {dst}")
print("\n".join(errs))
sys.exit(1 if errs else 0)
EOF
  ok "cloud-init runcmd scripts parse; tailor.yaml's copies of tailor.env and the units are current"
else
  bad "cloud-init contents: $(cat "$tmp/ci.out")"
fi

# --- compose ---------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  compose=()
fi
if ((${#compose[@]})); then
  # the scratch override's build context must exist for config to pass
  ctx=deploy/scratch/ctx
  made_ctx=""
  [ -d "$ctx" ] || { mkdir -p "$ctx" && made_ctx=1; }
  for files in "-f docker-compose.yml" "-f docker-compose.yml -f deploy/compose.scratch.yml"; do
    # shellcheck disable=SC2086
    if out=$("${compose[@]}" -p tailorcheck $files config -q 2>&1); then
      ok "${compose[*]} $files config"
    else
      bad "${compose[*]} $files config: $out"
    fi
  done
  [ -z "$made_ctx" ] || rmdir "$ctx"
else
  echo "check: skip  docker compose config (compose is not installed)"
fi

# --- scripts and Go ----------------------------------------------------------
for f in deploy/*.sh; do
  if bash -n "$f"; then ok "bash -n $f"; else bad "bash -n $f"; fi
done
if command -v go >/dev/null; then
  if out=$(go vet -tags deploy ./deploy/etcd ./deploy/helper 2>&1); then
    ok "go vet -tags deploy ./deploy/etcd ./deploy/helper"
  else
    bad "go vet: $out"
  fi
fi

if [ "$fails" -gt 0 ]; then
  echo "check: $fails failed"
  exit 1
fi
echo "check: all passed"
