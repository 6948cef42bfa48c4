//! Objects written as kube-apiserver writes them: `kind`, `apiVersion`, `metadata`, `spec`,
//! `status`, every struct's fields in Go struct order (`order_table`, generated from upstream's
//! types.go), map keys sorted as Go's encoder sorts them, unknown keys after the known ones.
//!
//! Objects are `serde_json::Value`s (sorted maps); this writes them through serde_json's own
//! serializer, so escaping and numbers are serde_json's compact output byte for byte.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::order_table::{KINDS, OBJECT, TYPES};

/// One JSON field of a Go struct: its name and the type of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field(pub &'static str, pub Ty);

/// How a value is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Written as serde_json writes it (scalars, string maps, Quantity, Time).
    Leaf,
    /// A struct (`TYPES[i]`), or an array of them.
    Struct(u16),
    /// A map (sorted keys) of structs `TYPES[i]`.
    MapOf(u16),
    /// An embedded object (`runtime.RawExtension`), ordered by its own apiVersion and kind.
    Dynamic,
}

/// The type of an object of `api_version` and `kind`, if berth knows it.
pub fn kind_type(api_version: &str, kind: &str) -> Option<Ty> {
    KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, i)| Ty::Struct(*i))
}

/// How `v` is ordered by its own `apiVersion` and `kind`: the kind's table; for an object
/// with a `kind` berth does not know, `kind`, `apiVersion`, `metadata` (as ObjectMeta) first;
/// anything else as serde_json writes it.
fn own_type(v: &Value) -> Ty {
    let Value::Object(m) = v else {
        return Ty::Leaf;
    };
    let Some(kind) = m.get("kind").and_then(Value::as_str) else {
        return Ty::Leaf;
    };
    let api_version = m.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    kind_type(api_version, kind).unwrap_or(Ty::Struct(OBJECT))
}

/// `v` as JSON in Go's field order (see the module doc). Never fails: a value of an unexpected
/// shape (a string where a struct belongs) is written as it is.
pub fn to_vec(v: &Value) -> Vec<u8> {
    // serde_json::to_vec's first allocation.
    let mut out = Vec::with_capacity(128);
    write(v, &mut out);
    out
}

/// Appends `v` as `to_vec` writes it.
pub fn write(v: &Value, out: &mut Vec<u8>) {
    write_as(v, own_type(v), out);
}

/// Appends `v` ordered as `ty`.
pub fn write_as(v: &Value, ty: Ty, out: &mut Vec<u8>) {
    let start = out.len();
    // Serializing a Value into a Vec cannot fail (its keys are strings, writes cannot
    // fail); should it, the plain form still goes out rather than half an object.
    if serde_json::to_writer(&mut *out, &Ordered { v, ty }).is_err() {
        out.truncate(start);
        out.extend_from_slice(v.to_string().as_bytes());
    }
}

struct Ordered<'a> {
    v: &'a Value,
    ty: Ty,
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ty = match self.ty {
            Ty::Dynamic => own_type(self.v),
            t => t,
        };
        match (self.v, ty) {
            (_, Ty::Leaf | Ty::Dynamic) => self.v.serialize(s),
            (Value::Array(a), t) => s.collect_seq(a.iter().map(|v| Ordered { v, ty: t })),
            (Value::Object(m), Ty::Struct(i)) => fields_in_order(m, fields(i), s),
            (Value::Object(m), Ty::MapOf(i)) => s.collect_map(m.iter().map(|(k, v)| {
                (
                    k,
                    Ordered {
                        v,
                        ty: Ty::Struct(i),
                    },
                )
            })),
            (v, _) => v.serialize(s),
        }
    }
}

fn fields(i: u16) -> &'static [Field] {
    TYPES.get(usize::from(i)).copied().unwrap_or(&[])
}

/// The known fields in table order, then the rest in the map's (sorted) order.
fn fields_in_order<S: Serializer>(
    m: &Map<String, Value>,
    known: &'static [Field],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut out = s.serialize_map(Some(m.len()))?;
    let mut written = 0;
    for Field(name, ty) in known {
        if let Some(v) = m.get(*name) {
            out.serialize_entry(name, &Ordered { v, ty: *ty })?;
            written += 1;
        }
    }
    if written < m.len() {
        for (k, v) in m {
            if !known.iter().any(|f| f.0 == k) {
                out.serialize_entry(k, v)?;
            }
        }
    }
    out.end()
}

#[cfg(test)]
mod tests;
