#!/usr/bin/env python3
"""Writes crates/api/src/order_table.rs: the JSON field order of every kind berth serves, as
kube-apiserver writes it (Go struct order), read from upstream's types.go files.

Usage (API and APIMACHINERY are git directories or checkouts of kubernetes/api and
kubernetes/apimachinery; the fetch tool leaves them under /work/.mirror):

    python3 scripts/gen-order-table.py API APIMACHINERY > crates/api/src/order_table.rs

The kinds are read from crates/api/src/resources.rs (`res("group", "version", "Kind", ...)`),
each with its List, plus the few kinds berth answers with that are not resources (Scale,
Table, PartialObjectMetadata, Status, Binding, Eviction, TokenRequest). Types are followed
field by field; a type the parsed packages do not define as a struct (strings, maps of
strings, Quantity, IntOrString, Time) is a leaf, written as serde_json writes it.
"""

import os
import re
import subprocess
import sys

API_PACKAGES = [
    "core/v1",
    "apps/v1",
    "discovery/v1",
    "networking/v1",
    "events/v1",
    "autoscaling/v1",
    "authentication/v1",
    "policy/v1",
]
META = "k8s.io/apimachinery/pkg/apis/meta/v1"
META_FILES = ["pkg/apis/meta/v1/types.go"]
# Types with their own MarshalJSON: written as the value is, never reordered.
OPAQUE = {META + ".Time", META + ".MicroTime", META + ".Duration", META + ".FieldsV1"}
# An embedded object: ordered by its own apiVersion and kind.
DYNAMIC = {"k8s.io/apimachinery/pkg/runtime.RawExtension"}
# (apiVersion, kind) -> Go type, beyond RESOURCES and their Lists.
EXTRA_KINDS = [
    ("autoscaling/v1", "Scale", "k8s.io/api/autoscaling/v1.Scale"),
    ("meta.k8s.io/v1", "Table", META + ".Table"),
    ("meta.k8s.io/v1", "PartialObjectMetadata", META + ".PartialObjectMetadata"),
    ("meta.k8s.io/v1", "PartialObjectMetadataList", META + ".PartialObjectMetadataList"),
    ("v1", "Status", META + ".Status"),
    ("v1", "Binding", "k8s.io/api/core/v1.Binding"),
    ("policy/v1", "Eviction", "k8s.io/api/policy/v1.Eviction"),
    ("authentication.k8s.io/v1", "TokenRequest", "k8s.io/api/authentication/v1.TokenRequest"),
]


def git_show(repo, path):
    return subprocess.run(
        ["git", "-C", repo, "show", "HEAD:" + path], check=True, capture_output=True, text=True
    ).stdout


def git_head(repo):
    return subprocess.run(
        ["git", "-C", repo, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in src.split("\n"))


def parse_file(pkg, src, structs, named):
    """Fills `structs` (qualified name -> [(json name or None for inline, go type, pkg, imports)])
    and `named` (qualified name -> (go type, imports)) from one Go file."""
    src = strip_comments(src)
    imports = {}
    for m in re.finditer(r'^\s*(?:(\w+)\s+)?"([^"]+)"\s*$', src, flags=re.M):
        alias, path = m.group(1), m.group(2)
        imports[alias or path.rsplit("/", 1)[-1]] = path
    ctx = (pkg, imports)
    for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", src, flags=re.M | re.S):
        fields = []
        for line in m.group(2).split("\n"):
            line = line.strip()
            if not line:
                continue
            tag = re.search(r"`([^`]*)`", line)
            decl = line[: tag.start()].split() if tag else line.split()
            jm = re.search(r'json:"([^"]*)"', tag.group(1)) if tag else None
            jname = jm.group(1).split(",")[0] if jm else None
            if jname == "-":
                continue
            if len(decl) == 1:  # embedded
                fields.append((jname or None, decl[0], ctx))
            elif len(decl) == 2 and jm is not None:
                fields.append((jname or decl[0], decl[1], ctx))
        structs[pkg + "." + m.group(1)] = fields
    for m in re.finditer(r"^type (\w+) (\S[^{\n]*)$", src, flags=re.M):
        if not m.group(2).startswith(("struct", "interface")):
            named[pkg + "." + m.group(1)] = (m.group(2).strip(), ctx)


def qualify(name, ctx):
    pkg, imports = ctx
    if "." in name:
        alias, base = name.split(".", 1)
        return imports.get(alias, alias) + "." + base
    return pkg + "." + name


class Table:
    def __init__(self, structs, named):
        self.structs, self.named = structs, named
        self.index, self.types = {}, []

    def ty(self, gotype, ctx, depth=0):
        """The Rust `Ty` of a Go type expression."""
        t = gotype.lstrip("*")
        while t.startswith("[]"):
            t = t[2:].lstrip("*")
        if t.startswith("map["):
            close, level = 0, 0
            for i, c in enumerate(t):
                level += c == "["
                level -= c == "]"
                if c == "]" and level == 0:
                    close = i
                    break
            inner = self.ty(t[close + 1 :], ctx, depth + 1)
            return inner.replace("Struct", "MapOf") if inner.startswith("Struct") else "Leaf"
        q = qualify(t, ctx)
        if q in DYNAMIC:
            return "Dynamic"
        if q in OPAQUE:
            return "Leaf"
        if q in self.structs:
            return "Struct(%d)" % self.struct(q)
        if q in self.named and depth < 8:
            target, nctx = self.named[q]
            return self.ty(target, nctx, depth + 1)
        return "Leaf"

    def flatten(self, q):
        out = []
        for jname, gotype, ctx in self.structs[q]:
            if jname is None:
                inner = qualify(gotype.lstrip("*"), ctx)
                if inner in self.structs and inner not in OPAQUE:
                    out.extend(self.flatten(inner))
                continue
            out.append((jname, gotype, ctx))
        return out

    def struct(self, q):
        if q in self.index:
            return self.index[q]
        i = len(self.types)
        self.index[q] = i
        self.types.append((q, None))
        seen, fields = set(), []
        for jname, gotype, ctx in self.flatten(q):
            if jname in seen:
                continue
            seen.add(jname)
            fields.append((jname, self.ty(gotype, ctx)))
        self.types[i] = (q, fields)
        return i


def served_kinds(resources_rs):
    src = open(resources_rs).read()
    out = []
    for g, v, k in re.findall(r'res\(\s*"([^"]*)",\s*"([^"]*)",\s*"([^"]*)"', src):
        api_version = v if not g else g + "/" + v
        pkg = "k8s.io/api/%s/%s" % ("core" if not g else g.split(".")[0], v)
        out.append((api_version, k, pkg + "." + k))
        out.append((api_version, k + "List", pkg + "." + k + "List"))
    return out


def main():
    api, machinery = sys.argv[1], sys.argv[2]
    structs, named = {}, {}
    for p in API_PACKAGES:
        parse_file("k8s.io/api/" + p, git_show(api, p + "/types.go"), structs, named)
    for f in META_FILES:
        parse_file(META, git_show(machinery, f), structs, named)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    kinds = served_kinds(os.path.join(root, "crates/api/src/resources.rs")) + EXTRA_KINDS
    table = Table(structs, named)
    rows = []
    for api_version, kind, q in kinds:
        if q not in structs:
            sys.exit("no Go struct %s for %s %s" % (q, api_version, kind))
        rows.append((api_version, kind, table.struct(q)))
    obj = table.struct(META + ".PartialObjectMetadata")
    text = []
    w = text.append
    w("//! Go's JSON field order for every kind berth serves (the `order` module's table).\n")
    w("//! @generated by `python3 scripts/gen-order-table.py API APIMACHINERY > crates/api/src/order_table.rs`\n")
    w("//! (API, APIMACHINERY: git directories of\n")
    w("//! kubernetes/api %s and kubernetes/apimachinery %s); do not edit.\n\n" % (git_head(api), git_head(machinery)))
    used = sorted({ty.split("(")[0] for _, fields in table.types for _, ty in fields})
    w("use crate::order::Field as F;\nuse crate::order::Ty::{%s};\n\n" % ", ".join(used))
    w("/// `kind`, `apiVersion`, `metadata`: the order of an object of a kind not in `KINDS`.\n")
    w("pub(crate) const OBJECT: u16 = %d;\n\n" % obj)
    w("/// (apiVersion, kind, index in `TYPES`).\n")
    w("pub(crate) static KINDS: &[(&str, &str, u16)] = &[\n")
    for api_version, kind, i in rows:
        w('    ("%s", "%s", %d),\n' % (api_version, kind, i))
    w("];\n\n/// Each Go struct's JSON fields in struct order (inlined structs flattened).\n")
    w("pub(crate) static TYPES: &[&[F]] = &[\n")
    for i, (q, fields) in enumerate(table.types):
        w("    // %d: %s\n    &[\n" % (i, q.replace("k8s.io/apimachinery/pkg/apis/", "").replace("k8s.io/api/", "")))
        for jname, ty in fields:
            w('        F("%s", %s),\n' % (jname, ty))
        w("    ],\n")
    w("];\n")
    # As `cargo fmt` leaves it, so a regenerated table differs only where upstream does.
    sys.stdout.write(
        subprocess.run(
            ["rustfmt", "--edition", "2024", "--emit", "stdout"],
            input="".join(text), check=True, capture_output=True, text=True,
        ).stdout
    )


if __name__ == "__main__":
    main()
