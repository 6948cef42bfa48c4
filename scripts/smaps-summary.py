#!/usr/bin/env python3
"""smaps-summary.py PID - where a process's resident memory is (run from bench-footprint.sh).

Sums Rss of /proc/PID/smaps by kind: the executable's mappings by permission (r-x text, r--
rodata and relocated .data.rel.ro, rw- data), shared libraries, [heap] (brk), anonymous
mappings (glibc's other arenas, mmap'd blocks, thread stacks) and the rest; prints the thread
count and, for anonymous mappings, how many there are of each size (stacks show up as many
mappings of the stack size). Only the standard library.
"""
import collections
import os
import sys

pid = sys.argv[1]
exe = os.path.realpath(f"/proc/{pid}/exe")
kinds = collections.OrderedDict()
anon_sizes = collections.Counter()
cur = None
with open(f"/proc/{pid}/smaps") as f:
    for line in f:
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            perms, path = head[1], (head[5] if len(head) > 5 else "")
            if path == exe:
                kind = f"binary {perms[:3]}"
            elif path.startswith("/"):
                kind = f"libraries {perms[:3]}"
            elif path == "[heap]":
                kind = "[heap]"
            elif path == "":
                kind = "anonymous"
            else:
                kind = path
            cur = (kind, hi - lo)
            kinds.setdefault(kind, [0, 0, 0])
            kinds[kind][2] += 1
        elif head[0] == "Rss:" and cur:
            kinds[cur[0]][0] += int(head[1])
            if cur[0] == "anonymous" and int(head[1]):
                anon_sizes[(cur[1] // 1024, int(head[1]))] += 1
        elif head[0] == "Size:" and cur:
            kinds[cur[0]][1] += int(head[1])
threads = len(os.listdir(f"/proc/{pid}/task"))
total = sum(v[0] for v in kinds.values())
print(f"  smaps of {pid}: {total / 1024:.1f} MiB resident, {threads} threads")
for kind, (rss, size, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
    if rss:
        print(f"    {kind:16} {rss / 1024:7.1f} MiB resident of {size / 1024:8.1f} MiB in {n} mappings")
print("    anonymous mappings with resident pages (size KiB, resident KiB) x count:")
for (size, rss), n in sorted(anon_sizes.items(), key=lambda kv: -kv[0][1] * kv[1])[:12]:
    print(f"      {size:8} {rss:8} x {n}")
