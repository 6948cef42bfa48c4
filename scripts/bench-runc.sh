#!/usr/bin/env bash
# What starting a container costs under Debian's runc, without berth: `runc run /bin/true`
# on a busybox root bind-mounted in place, then the way berth's agent starts one (unshare a
# private mount namespace, overlayfs over the image's root, runc run). 30 runs each, p50/p90.
# Run as root: sudo bash scripts/bench-runc.sh
set -euo pipefail
d=$(mktemp -d /tmp/berth-bench-runc.XXXXXX)
trap 'umount "$d/rootfs" 2>/dev/null || true; rm -rf "$d"' EXIT
mkdir -p "$d"/lower/bin "$d"/rootfs "$d"/state
cp "$(command -v busybox)" "$d/lower/bin/busybox"
ln -s busybox "$d/lower/bin/true"
cd "$d" && runc spec
python3 - "$d" <<'PY'
import json, sys, subprocess, time, statistics
d = sys.argv[1]
c = json.load(open(f"{d}/config.json"))
c["process"].update(terminal=False, args=["/bin/true"])
c["root"].update(readonly=False, path="rootfs")
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "cgroup"]
json.dump(c, open(f"{d}/config.json", "w"))
def runs(prepare, cmd):
    t = []
    for _ in range(30):
        prepare()
        s = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        t.append((time.perf_counter() - s) * 1000)
    t.sort()
    return f"p50 {statistics.median(t):.1f} ms, p90 {t[26]:.1f} ms"
subprocess.run(["mount", "--bind", f"{d}/lower", f"{d}/rootfs"], check=True)
print("runc run /bin/true:                     ", runs(lambda: None, ["runc", "--root", f"{d}/state", "run", "--bundle", d, "b1"]))
subprocess.run(["umount", f"{d}/rootfs"], check=True)
launch = 'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" && exec runc --root "$5/state" run --bundle "$5" b2'
def fresh():
    subprocess.run(f"rm -rf {d}/upper {d}/work; mkdir {d}/upper {d}/work", shell=True, check=True)
print("unshare + overlayfs + runc run /bin/true:", runs(fresh, ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", launch, "sh", f"{d}/lower", f"{d}/upper", f"{d}/work", f"{d}/rootfs", d]))
PY
