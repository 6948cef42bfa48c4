#!/usr/bin/env python3
"""bench-footprint.py - the API side of scripts/bench-footprint.sh (run it from there).

  load KUBECONFIG N          create namespace `bench`, N selector-less Services (one TCP port)
                             and one EndpointSlice of 5 ready endpoints per Service, over a few
                             keep-alive HTTPS connections in parallel
  lists KUBECONFIG N [SEL]   N LISTs of every Service, then (unless SEL is 0) N with a label selector
                             (the server's decoded path): p50/min/max ms and bytes
  ryw KUBECONFIG DNS_ADDR N  read-your-writes of the cluster DNS: N times, create Service
                             rw-I; from the API's 201 until DNS_ADDR (IP:PORT, UDP) answers its
                             A record; then delete it, from the API's 200 until NXDOMAIN.
                             Prints p50/p99/max of both.

Only the standard library (and PyYAML for the kubeconfig), so it runs wherever the script does.
"""
import base64
import http.client
import json
import os
import random
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time

import yaml


class Api:
    """One keep-alive HTTPS connection to the API server named by a kubeconfig."""

    def __init__(self, kubeconfig):
        with open(kubeconfig) as f:
            kc = yaml.safe_load(f)
        cluster = kc["clusters"][0]["cluster"]
        user = kc["users"][0]["user"]
        self.host = cluster["server"].split("://", 1)[1]
        ctx = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        with tempfile.NamedTemporaryFile("wb", delete=False) as c, \
                tempfile.NamedTemporaryFile("wb", delete=False) as k:
            c.write(base64.b64decode(user["client-certificate-data"]))
            k.write(base64.b64decode(user["client-key-data"]))
        try:
            ctx.load_cert_chain(c.name, k.name)
        finally:
            os.unlink(c.name)
            os.unlink(k.name)
        self.ctx = ctx
        self.conn = None

    def call(self, method, path, body=None):
        """Returns (status, body bytes); reconnects once if the connection was closed."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, context=self.ctx, timeout=30)
            try:
                data = None if body is None else json.dumps(body).encode()
                headers = {"Content-Type": "application/json"} if data else {}
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def service(name):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": 8080}]}}


def slice_of(i):
    eps = []
    for e in range(5):
        n = i * 5 + e
        eps.append({"addresses": [f"10.{128 + (n >> 16) % 64}.{(n >> 8) % 256}.{n % 256}"],
                    "conditions": {"ready": True}})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"s{i}-1", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"s{i}",
                                    "endpointslice.kubernetes.io/managed-by": "bench"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps}


def load(kubeconfig, n, threads=4):
    api = Api(kubeconfig)
    s, b = api.call("POST", "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
    if s not in (201, 409):
        sys.exit(f"creating namespace bench: {s} {b[:200]!r}")
    errors = []

    def work(part):
        a = Api(kubeconfig)
        for i in range(part, n, threads):
            for path, body in (("/api/v1/namespaces/bench/services", service(f"s{i}")),
                               ("/apis/discovery.k8s.io/v1/namespaces/bench/endpointslices",
                                slice_of(i))):
                st, b = a.call("POST", path, body)
                if st not in (201, 409):
                    errors.append(f"{path} s{i}: {st} {b[:200]!r}")
                    return

    t = time.monotonic()
    ts = [threading.Thread(target=work, args=(p,)) for p in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    if errors:
        sys.exit("\n".join(errors[:5]))
    print(f"loaded {n} Services + {n} EndpointSlices x 5 endpoints in "
          f"{time.monotonic() - t:.1f} s", file=sys.stderr)


def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def ask(sock, addr, name):
    """(rcode, answer count) of one A query, retried on loss."""
    while True:
        qid = random.randrange(65536)
        sock.sendto(query(qid, name), addr)
        try:
            while True:
                data, _ = sock.recvfrom(4096)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    flags, _, an = struct.unpack(">HHH", data[2:8])
                    return flags & 0xF, an
        except socket.timeout:
            continue


def wait_for(sock, addr, name, done, limit=5.0):
    """Seconds until `done(rcode, ancount)`, asking back to back; None after `limit`."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if done(*ask(sock, addr, name)):
            return time.perf_counter() - t0
    return None


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, round((len(v) - 1) * p))]


def ryw(kubeconfig, dns, n):
    api = Api(kubeconfig)
    host, port = dns.rsplit(":", 1)
    addr = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    create, delete, missed = [], [], 0
    for i in range(n):
        name = f"rw-{os.getpid()}-{i}"
        fq = f"{name}.bench.svc.cluster.local"
        st, b = api.call("POST", "/api/v1/namespaces/bench/services", service(name))
        if st != 201:
            sys.exit(f"create {name}: {st} {b[:200]!r}")
        t = wait_for(sock, addr, fq, lambda rc, an: rc == 0 and an > 0)
        if t is None:
            missed += 1
        else:
            create.append(t)
        st, b = api.call("DELETE", f"/api/v1/namespaces/bench/services/{name}")
        if st != 200:
            sys.exit(f"delete {name}: {st} {b[:200]!r}")
        t = wait_for(sock, addr, fq, lambda rc, an: rc == 3)
        if t is None:
            missed += 1
        else:
            delete.append(t)
    for what, v in (("create", create), ("delete", delete)):
        ms = [x * 1e3 for x in v]
        print(f"RYW {what} n={len(ms)} p50_ms={pct(ms, .5):.3f} p99_ms={pct(ms, .99):.3f} "
              f"max_ms={max(ms):.3f}")
    print(f"RYW missed={missed}")


def lists(kubeconfig, n, selector=True):
    """n LISTs of every Service (one keep-alive connection, as a client's relist), then the
    same with a label selector and with a field selector, all selecting every Service:
    p50/min/max and the response size."""
    api = Api(kubeconfig)
    paths = [("LIST services", "/api/v1/services")]
    if selector:
        paths.append(("LIST services?labelSelector=x!=y", "/api/v1/services?labelSelector=x!%3Dy"))
        paths.append(("LIST services?fieldSelector=metadata.name!=y",
                      "/api/v1/services?fieldSelector=metadata.name!%3Dy"))
    for label, path in paths:
        times, size = [], 0
        for _ in range(n):
            t0 = time.perf_counter()
            status, body = api.call("GET", path)
            times.append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:200]!r}")
            size = len(body)
        items = len(json.loads(body)["items"])
        print(f"{label}: n={n} items={items} bytes={size} p50_ms={pct(times, 0.5):.1f}"
              f" min_ms={min(times):.1f} max_ms={max(times):.1f}")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "load" and len(sys.argv) == 4:
        load(sys.argv[2], int(sys.argv[3]))
    elif cmd == "lists" and len(sys.argv) in (4, 5):
        lists(sys.argv[2], int(sys.argv[3]), sys.argv[4:5] != ["0"])
    elif cmd == "ryw" and len(sys.argv) == 5:
        ryw(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
