//! `/openapi/v2` as protobuf: the Swagger 2.0 JSON document encoded as gnostic's
//! `openapi.v2.Document` message, the form kubectl asks for (`explain
//! --output=plaintext-openapiv2`, client-side validation of kinds the v3 documents lack).
//!
//! The encoder is hand-written: no maintained Rust crate carries gnostic's messages. Field
//! numbers are those of gnostic-models' `openapiv2/OpenAPIv2.proto`. Keys the messages have no
//! field for are left out, as gnostic's compiler leaves them out; values that equal proto3's
//! defaults (`""`, `false`, `0`) are not written, as Go's marshaller does not write them.

use serde_json::{Map, Value};

/// Encodes a Swagger 2.0 document (`swagger`, `info`, `paths`, `definitions`, ...) as an
/// `openapi.v2.Document`. Never fails: a value of the wrong JSON type is left out.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    m.str_of(1, doc.get("swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = Msg::default();
        i.str_of(1, info.get("title"));
        i.str_of(2, info.get("version"));
        i.str_of(3, info.get("description"));
        i.str_of(4, info.get("termsOfService"));
        i.extensions(7, info);
        m.message(2, i);
    }
    m.str_of(3, doc.get("host"));
    m.str_of(4, doc.get("basePath"));
    m.strings(5, doc.get("schemes"));
    m.strings(6, doc.get("consumes"));
    m.strings(7, doc.get("produces"));
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        let mut p = Msg::default();
        extensions_of(&mut p, 1, paths);
        for (name, item) in paths.iter().filter(|(k, _)| !k.starts_with("x-")) {
            p.named(2, name, path_item(item));
        }
        m.message(8, p);
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        let mut d = Msg::default();
        for (name, s) in defs {
            d.named(1, name, schema(s));
        }
        m.message(9, d);
    }
    m.extensions(16, doc);
    m.0
}

/// `openapi.v2.Schema`.
pub fn schema(s: &Value) -> Msg {
    let mut m = Msg::default();
    m.str_of(1, s.get("$ref"));
    m.str_of(2, s.get("format"));
    m.str_of(3, s.get("title"));
    m.str_of(4, s.get("description"));
    m.any(5, s.get("default"));
    m.double(6, s.get("multipleOf"));
    m.double(7, s.get("maximum"));
    m.boolean(8, s.get("exclusiveMaximum"));
    m.double(9, s.get("minimum"));
    m.boolean(10, s.get("exclusiveMinimum"));
    m.int64(11, s.get("maxLength"));
    m.int64(12, s.get("minLength"));
    m.str_of(13, s.get("pattern"));
    m.int64(14, s.get("maxItems"));
    m.int64(15, s.get("minItems"));
    m.boolean(16, s.get("uniqueItems"));
    m.int64(17, s.get("maxProperties"));
    m.int64(18, s.get("minProperties"));
    m.strings(19, s.get("required"));
    for e in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.any(20, Some(e));
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            a.key(2, VARINT);
            a.0.push(u8::from(*b));
            m.message(21, a);
        }
        Some(v @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.message(1, schema(v));
            m.message(21, a);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut t_ = Msg::default();
            t_.bytes(1, t.as_bytes());
            m.message(22, t_);
        }
        Some(t @ Value::Array(_)) => {
            let mut t_ = Msg::default();
            t_.strings(1, Some(t));
            m.message(22, t_);
        }
        _ => {}
    }
    match s.get("items") {
        Some(v @ Value::Object(_)) => {
            let mut i = Msg::default();
            i.message(1, schema(v));
            m.message(23, i);
        }
        Some(Value::Array(items)) => {
            let mut i = Msg::default();
            for v in items {
                i.message(1, schema(v));
            }
            m.message(23, i);
        }
        _ => {}
    }
    for a in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, schema(a));
    }
    // Written even when empty: kubectl tells an object with no fields (a kind) from a map by
    // whether `properties` is there at all.
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, v) in props {
            p.named(1, name, schema(v));
        }
        m.message(25, p);
    }
    m.str_of(26, s.get("discriminator"));
    m.boolean(27, s.get("readOnly"));
    m.any(30, s.get("example"));
    m.extensions(31, s);
    m
}

/// `openapi.v2.PathItem`.
fn path_item(item: &Value) -> Msg {
    let mut m = Msg::default();
    m.str_of(1, item.get("$ref"));
    for (field, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = item.get(method).filter(|v| v.is_object()) {
            m.message(field, operation(op));
        }
    }
    for p in item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(9, parameters_item(p));
    }
    m.extensions(10, item);
    m
}

/// `openapi.v2.Operation`.
fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    m.strings(1, op.get("tags"));
    m.str_of(2, op.get("summary"));
    m.str_of(3, op.get("description"));
    m.str_of(5, op.get("operationId"));
    m.strings(6, op.get("produces"));
    m.strings(7, op.get("consumes"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(8, parameters_item(p));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut r = Msg::default();
        for (code, resp) in responses.iter().filter(|(k, _)| !k.starts_with("x-")) {
            // ResponseValue: a Response (1) or a JsonReference (2).
            let mut v = Msg::default();
            if resp.get("$ref").is_some() {
                v.message(2, json_reference(resp));
            } else {
                let mut one = Msg::default();
                one.str_of(1, resp.get("description"));
                if let Some(s) = resp.get("schema").filter(|s| s.is_object()) {
                    // SchemaItem: a Schema (1); FileSchema (2) is for `type: file`, which
                    // Kubernetes never answers with.
                    let mut item = Msg::default();
                    item.message(1, schema(s));
                    one.message(2, item);
                }
                one.extensions(5, resp);
                v.message(1, one);
            }
            r.named(1, code, v);
        }
        extensions_of(&mut r, 2, responses);
        m.message(9, r);
    }
    m.strings(10, op.get("schemes"));
    m.boolean(11, op.get("deprecated"));
    m.extensions(13, op);
    m
}

/// `openapi.v2.ParametersItem`: a Parameter (1), itself a BodyParameter (1) or a
/// NonBodyParameter (2), or a JsonReference (2).
fn parameters_item(p: &Value) -> Msg {
    let mut item = Msg::default();
    if p.get("$ref").is_some() {
        item.message(2, json_reference(p));
        return item;
    }
    let mut param = Msg::default();
    let at = p.get("in").and_then(Value::as_str).unwrap_or("");
    if at == "body" {
        let mut b = Msg::default();
        b.str_of(1, p.get("description"));
        b.str_of(2, p.get("name"));
        b.str_of(3, p.get("in"));
        b.boolean(4, p.get("required"));
        if let Some(s) = p.get("schema").filter(|s| s.is_object()) {
            b.message(5, schema(s));
        }
        b.extensions(6, p);
        param.message(1, b);
    } else {
        // The four sub-schemas share a layout: required, in, description, name, then (after
        // `allowEmptyValue` for query and formData) PrimitivesItems' fields shifted up.
        let (choice, shift) = match at {
            "header" => (1, 4),
            "formData" => (2, 5),
            "path" => (4, 4),
            _ => (3, 5),
        };
        let mut s = Msg::default();
        s.boolean(1, p.get("required"));
        s.str_of(2, p.get("in"));
        s.str_of(3, p.get("description"));
        s.str_of(4, p.get("name"));
        if shift == 5 {
            s.boolean(5, p.get("allowEmptyValue"));
        }
        primitive_fields(&mut s, p, shift);
        let mut nb = Msg::default();
        nb.message(choice, s);
        param.message(2, nb);
    }
    item.message(1, param);
    item
}

/// The fields of `openapi.v2.PrimitivesItems` (numbered 1..=18 there), at `number + shift`.
fn primitive_fields(m: &mut Msg, v: &Value, shift: u32) {
    m.str_of(1 + shift, v.get("type"));
    m.str_of(2 + shift, v.get("format"));
    if let Some(items) = v.get("items").filter(|i| i.is_object()) {
        let mut i = Msg::default();
        primitive_fields(&mut i, items, 0);
        m.message(3 + shift, i);
    }
    m.str_of(4 + shift, v.get("collectionFormat"));
    m.any(5 + shift, v.get("default"));
    m.double(6 + shift, v.get("maximum"));
    m.boolean(7 + shift, v.get("exclusiveMaximum"));
    m.double(8 + shift, v.get("minimum"));
    m.boolean(9 + shift, v.get("exclusiveMinimum"));
    m.int64(10 + shift, v.get("maxLength"));
    m.int64(11 + shift, v.get("minLength"));
    m.str_of(12 + shift, v.get("pattern"));
    m.int64(13 + shift, v.get("maxItems"));
    m.int64(14 + shift, v.get("minItems"));
    m.boolean(15 + shift, v.get("uniqueItems"));
    for e in v
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.any(16 + shift, Some(e));
    }
    m.double(17 + shift, v.get("multipleOf"));
    m.extensions(18 + shift, v);
}

/// `openapi.v2.JsonReference`.
fn json_reference(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.str_of(1, v.get("$ref"));
    m.str_of(2, v.get("description"));
    m
}

/// `x-` keys of `obj` as repeated `NamedAny` in `field`.
fn extensions_of(m: &mut Msg, field: u32, obj: &Map<String, Value>) {
    for (name, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut any = Msg::default();
        any.any_body(v);
        m.named(field, name, any);
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// One message being written.
#[derive(Default)]
pub struct Msg(pub Vec<u8>);

impl Msg {
    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    /// A `Named*` entry: name (1) and value (2), the form gnostic gives every map.
    fn named(&mut self, field: u32, name: &str, value: Msg) {
        let mut n = Msg::default();
        n.str_of(1, Some(&Value::from(name)));
        n.message(2, value);
        self.message(field, n);
    }

    fn str_of(&mut self, field: u32, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A repeated string: every element is written, empty or not.
    fn strings(&mut self, field: u32, v: Option<&Value>) {
        for s in v
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.key(field, VARINT);
            self.0.push(1);
        }
    }

    fn double(&mut self, field: u32, v: Option<&Value>) {
        if let Some(f) = v.and_then(Value::as_f64).filter(|f| *f != 0.0) {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    fn int64(&mut self, field: u32, v: Option<&Value>) {
        if let Some(i) = v.and_then(Value::as_i64).filter(|i| *i != 0) {
            self.key(field, VARINT);
            // int64 on the wire: two's complement, so a negative value takes ten bytes.
            varint(&mut self.0, i as u64);
        }
    }

    /// An `openapi.v2.Any` holding `v`, if present.
    fn any(&mut self, field: u32, v: Option<&Value>) {
        if let Some(v) = v {
            let mut a = Msg::default();
            a.any_body(v);
            self.message(field, a);
        }
    }

    /// The `yaml` field (2) of an `openapi.v2.Any`: the value as JSON text, which is YAML
    /// (kubectl reads these with a YAML parser); `value` (1) is for binary payloads only.
    fn any_body(&mut self, v: &Value) {
        self.bytes(2, v.to_string().as_bytes());
    }

    fn extensions(&mut self, field: u32, obj: &Value) {
        if let Some(o) = obj.as_object() {
            extensions_of(self, field, o);
        }
    }
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A minimal reader of the wire format, for the tests' decoding of what was written.
#[cfg(test)]
pub mod wire {
    /// A field's value as the wire holds it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Field<'a> {
        Varint(u64),
        Fixed64(u64),
        Bytes(&'a [u8]),
    }

    /// Every field of one message, in order; `None` on malformed input.
    pub fn fields(mut b: &[u8]) -> Option<Vec<(u32, Field<'_>)>> {
        fn varint(b: &mut &[u8]) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = b.split_first()?;
                *b = rest;
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return Some(v);
                }
            }
            None
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b)?;
            let number = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
            let f = match key & 7 {
                0 => Field::Varint(varint(&mut b)?),
                1 => {
                    let (v, rest) = b.split_first_chunk::<8>()?;
                    b = rest;
                    Field::Fixed64(u64::from_le_bytes(*v))
                }
                2 => {
                    let len = usize::try_from(varint(&mut b)?).ok()?;
                    let (v, rest) = b.split_at_checked(len)?;
                    b = rest;
                    Field::Bytes(v)
                }
                _ => return None,
            };
            out.push((number, f));
        }
        Some(out)
    }

    /// The values of field `n`.
    pub fn all<'a>(msg: &[(u32, Field<'a>)], n: u32) -> Vec<Field<'a>> {
        msg.iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, v)| *v)
            .collect()
    }

    /// The bytes of length-delimited fields `n`.
    pub fn bytes<'a>(msg: &[(u32, Field<'a>)], n: u32) -> Vec<&'a [u8]> {
        all(msg, n)
            .into_iter()
            .filter_map(|f| match f {
                Field::Bytes(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// The string in field `n`, if any.
    pub fn string(msg: &[(u32, Field<'_>)], n: u32) -> Option<String> {
        bytes(msg, n)
            .last()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// `Named*` entries in field `n`: (name, value bytes).
    pub fn named<'a>(msg: &[(u32, Field<'a>)], n: u32) -> Vec<(String, &'a [u8])> {
        bytes(msg, n)
            .into_iter()
            .filter_map(|e| {
                let e = fields(e)?;
                Some((string(&e, 1).unwrap_or_default(), *bytes(&e, 2).last()?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{self, Field};
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Decodes an `openapi.v2.Schema` back to JSON, for the subset `arb_schema` generates.
    fn decode_schema(b: &[u8]) -> Value {
        let f = wire::fields(b).expect("well-formed schema");
        let mut out = Map::new();
        for (n, key) in [
            (1, "$ref"),
            (2, "format"),
            (3, "title"),
            (4, "description"),
            (13, "pattern"),
        ] {
            if let Some(s) = wire::string(&f, n) {
                out.insert(key.into(), s.into());
            }
        }
        for (n, key) in [(7, "maximum"), (9, "minimum")] {
            if let Some(Field::Fixed64(v)) = wire::all(&f, n).last() {
                out.insert(key.into(), json!(f64::from_bits(*v)));
            }
        }
        for (n, key) in [(11, "maxLength"), (14, "maxItems")] {
            if let Some(Field::Varint(v)) = wire::all(&f, n).last() {
                out.insert(key.into(), json!(*v as i64));
            }
        }
        if let Some(Field::Varint(1)) = wire::all(&f, 16).last() {
            out.insert("uniqueItems".into(), true.into());
        }
        let strs = |b: Vec<&[u8]>| -> Value {
            b.iter()
                .map(|s| Value::from(String::from_utf8_lossy(s).into_owned()))
                .collect()
        };
        let required = wire::bytes(&f, 19);
        if !required.is_empty() {
            out.insert("required".into(), strs(required));
        }
        let any = |b: &[u8]| -> Value {
            let a = wire::fields(b).expect("any");
            serde_json::from_str(&wire::string(&a, 2).expect("yaml")).expect("json yaml")
        };
        let enums: Vec<Value> = wire::bytes(&f, 20).into_iter().map(any).collect();
        if !enums.is_empty() {
            out.insert("enum".into(), enums.into());
        }
        if let Some(a) = wire::bytes(&f, 21).last() {
            let a = wire::fields(a).expect("additionalProperties");
            let v = match (wire::bytes(&a, 1).last(), wire::all(&a, 2).last()) {
                (Some(s), _) => decode_schema(s),
                (None, Some(Field::Varint(b))) => Value::Bool(*b == 1),
                _ => Value::Null,
            };
            out.insert("additionalProperties".into(), v);
        }
        if let Some(t) = wire::bytes(&f, 22).last() {
            let t = wire::fields(t).expect("type");
            out.insert("type".into(), strs(wire::bytes(&t, 1)));
        }
        if let Some(i) = wire::bytes(&f, 23).last() {
            let i = wire::fields(i).expect("items");
            let items: Vec<Value> = wire::bytes(&i, 1).into_iter().map(decode_schema).collect();
            out.insert("items".into(), items.into());
        }
        if let Some(p) = wire::bytes(&f, 25).last() {
            let p = wire::fields(p).expect("properties");
            let props: Map<String, Value> = wire::named(&p, 1)
                .into_iter()
                .map(|(k, v)| (k, decode_schema(v)))
                .collect();
            out.insert("properties".into(), props.into());
        }
        for (name, v) in wire::named(&f, 31) {
            out.insert(name, any(v));
        }
        Value::Object(out)
    }

    /// The form `decode_schema` gives back: `type` and `items` always as lists.
    fn normal(s: &Value) -> Value {
        let mut s = s.clone();
        if let Some(o) = s.as_object_mut() {
            if let Some(Value::String(t)) = o.get("type").cloned() {
                o.insert("type".into(), json!([t]));
            }
            if let Some(i @ Value::Object(_)) = o.get("items").cloned() {
                o.insert("items".into(), json!([normal(&i)]));
            }
            if let Some(a @ Value::Object(_)) = o.get("additionalProperties").cloned() {
                o.insert("additionalProperties".into(), normal(&a));
            }
            if let Some(Value::Object(p)) = o.get("properties").cloned() {
                let p: Map<String, Value> = p.iter().map(|(k, v)| (k.clone(), normal(v))).collect();
                o.insert("properties".into(), p.into());
            }
        }
        s
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ./#:-]{1,12}"
    }

    /// Schemas without proto3 default values (which the wire cannot tell from absent).
    fn arb_schema() -> impl Strategy<Value = Value> {
        let leaf = (
            proptest::option::of(word()),
            proptest::option::of(prop_oneof![Just("string"), Just("integer"), Just("object")]),
            proptest::option::of(word()),
            proptest::option::of(1i64..i64::MAX),
            proptest::option::of(-1e9f64..1e9f64),
            proptest::option::of(proptest::collection::vec(word(), 1..3)),
            any::<bool>(),
        )
            .prop_map(|(d, t, r, ml, max, req, uniq)| {
                let mut o = Map::new();
                if let Some(d) = d {
                    o.insert("description".into(), d.into());
                }
                if let Some(t) = t {
                    o.insert("type".into(), t.into());
                }
                if let Some(r) = r {
                    o.insert("$ref".into(), r.into());
                }
                if let Some(ml) = ml {
                    o.insert("maxLength".into(), ml.into());
                }
                if let Some(max) = max.filter(|m| *m != 0.0) {
                    o.insert("maximum".into(), max.into());
                }
                if let Some(req) = req {
                    o.insert("required".into(), req.into());
                    o.insert("enum".into(), json!(["a", 1, {"k": [true]}]));
                }
                if uniq {
                    o.insert("uniqueItems".into(), true.into());
                    o.insert("x-kubernetes-list-type".into(), "map".into());
                }
                Value::Object(o)
            });
        leaf.prop_recursive(3, 24, 4, |inner| {
            (
                proptest::collection::btree_map(word(), inner.clone(), 0..4),
                proptest::option::of(inner.clone()),
                proptest::option::of(prop_oneof![
                    inner.prop_map(|s| s),
                    any::<bool>().prop_map(Value::Bool)
                ]),
            )
                .prop_map(|(props, items, extra)| {
                    let mut o = Map::new();
                    o.insert("properties".into(), json!(props));
                    if let Some(i) = items {
                        o.insert("items".into(), i);
                    }
                    if let Some(a) = extra {
                        o.insert("additionalProperties".into(), a);
                    }
                    Value::Object(o)
                })
        })
    }

    proptest! {
        #[test]
        fn schemas_round_trip(s in arb_schema()) {
            let bytes = schema(&s).0;
            prop_assert_eq!(decode_schema(&bytes), normal(&s));
        }

        #[test]
        fn any_document_encodes_to_well_formed_bytes(
            doc in proptest::collection::btree_map(
                prop_oneof![Just("swagger".to_owned()), Just("paths".to_owned()),
                            Just("definitions".to_owned()), Just("info".to_owned()), word()],
                arb_json(), 0..5)
        ) {
            let bytes = encode_document(&json!(doc));
            prop_assert!(wire::fields(&bytes).is_some());
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            word().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("get".to_owned()),
                        Just("parameters".to_owned()),
                        Just("in".to_owned()),
                        Just("schema".to_owned()),
                        Just("responses".to_owned()),
                        Just("items".to_owned()),
                        Just("properties".to_owned()),
                        Just("x-e".to_owned()),
                        word()
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| json!(m)),
            ]
        })
    }

    #[test]
    fn parameters_take_the_oneof_their_location_names() {
        let op = json!({"parameters": [
            {"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/definitions/X"}},
            {"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true},
            {"name": "name", "in": "path", "type": "string", "required": true},
        ]});
        let m = operation(&op).0;
        let f = wire::fields(&m).expect("operation");
        let params = wire::bytes(&f, 8);
        assert_eq!(params.len(), 3);
        let param = |i: usize| {
            let item = wire::fields(params[i]).expect("item");
            wire::fields(wire::bytes(&item, 1)[0]).expect("parameter")
        };
        // body: Parameter.body_parameter (1), schema (5) with _ref (1).
        let body = wire::fields(wire::bytes(&param(0), 1)[0]).expect("body");
        assert_eq!(wire::string(&body, 2).as_deref(), Some("body"));
        assert_eq!(wire::all(&body, 4), vec![Field::Varint(1)]);
        let s = wire::fields(wire::bytes(&body, 5)[0]).expect("schema");
        assert_eq!(wire::string(&s, 1).as_deref(), Some("#/definitions/X"));
        // query: non_body_parameter (2) -> query_parameter_sub_schema (3); type is 6,
        // uniqueItems 20.
        let nb = wire::fields(wire::bytes(&param(1), 2)[0]).expect("non-body");
        let q = wire::fields(wire::bytes(&nb, 3)[0]).expect("query");
        assert_eq!(wire::string(&q, 4).as_deref(), Some("dryRun"));
        assert_eq!(wire::string(&q, 6).as_deref(), Some("string"));
        assert_eq!(wire::all(&q, 20), vec![Field::Varint(1)]);
        // path: path_parameter_sub_schema (4); type is 5.
        let nb = wire::fields(wire::bytes(&param(2), 2)[0]).expect("non-body");
        let p = wire::fields(wire::bytes(&nb, 4)[0]).expect("path");
        assert_eq!(wire::string(&p, 5).as_deref(), Some("string"));
        assert_eq!(wire::all(&p, 1), vec![Field::Varint(1)]);
    }

    #[test]
    fn empty_properties_are_written() {
        let m = schema(&json!({"type": "object", "properties": {}})).0;
        let f = wire::fields(&m).expect("schema");
        assert_eq!(wire::bytes(&f, 25), vec![&[] as &[u8]]);
        let m = schema(&json!({"type": "object"})).0;
        assert!(wire::bytes(&wire::fields(&m).expect("schema"), 25).is_empty());
    }
}
