//! `?labelSelector=` and `?fieldSelector=` as one predicate over objects, shared by list,
//! watch and deletecollection.
//!
//! A filter also tests a stored object's JSON without decoding all of it
//! ([`Filter::matches_stored`]): only the members the selectors read (`metadata.labels`, the
//! named fields, `metadata.name`) are decoded, into a pruned object the same predicate then
//! judges; the rest is skipped by the parser. serde offers no such partial decode, so the
//! seed that prunes is written here.

use std::borrow::Cow;
use std::fmt;

use berth_api::fields::{self, FieldSelector};
use berth_api::resources::Resource;
use berth_api::selector::Selector;
use berth_store::KeyValue;
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, Result};
use crate::meta::labels;
use crate::request::Params;

/// Which objects a request is about.
#[derive(Debug, Clone)]
pub struct Filter {
    labels: Option<Selector>,
    fields: Option<FieldSelector>,
    /// The object name from a single-object watch URL.
    name: Option<String>,
    /// The members `matches` reads, for `matches_stored`.
    paths: Paths,
}

impl Filter {
    /// Parses the selectors, rejecting field labels the resource does not support, as
    /// kube-apiserver does (`400 field label not supported: ...`).
    pub fn new(r: &Resource, params: &Params) -> Result<Self> {
        let labels = match params
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            None => None,
            Some(s) => Some(Selector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?),
        };
        let fields = match params
            .field_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            None => None,
            Some(s) => {
                let sel =
                    FieldSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                for req in sel.requirements() {
                    if !r.is_selectable(&req.field) {
                        return Err(ApiError::BadRequest(format!(
                            "field label not supported: {}",
                            req.field
                        )));
                    }
                }
                Some(sel)
            }
        };
        let mut paths = Paths::default();
        if labels.is_some() {
            paths.add(["metadata", "labels"]);
        }
        for req in fields.iter().flat_map(FieldSelector::requirements) {
            paths.add(req.field.split('.'));
        }
        Ok(Self {
            labels,
            fields,
            name: None,
            paths,
        })
    }

    pub fn with_name(mut self, name: Option<String>) -> Self {
        if name.is_some() {
            self.paths.add(["metadata", "name"]);
        }
        self.name = name;
        self
    }

    /// Whether every object matches (no selector, no name).
    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none() && self.name.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(n) = &self.name
            && obj
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                != Some(n.as_str())
        {
            return false;
        }
        if let Some(l) = &self.labels
            && !l.matches(&labels(obj))
        {
            return false;
        }
        match &self.fields {
            Some(f) => f.matches(|field| fields::fields_of(obj, field)),
            None => true,
        }
    }

    /// [`Filter::matches`] for a stored object (its resourceVersion, which no selector can
    /// name, left out), decoding only the members the selectors read. A value that does not
    /// parse is decoded whole, so it fails as the decoded path does.
    pub fn matches_stored(&self, kv: &KeyValue) -> Result<bool> {
        if self.is_everything() {
            return Ok(true);
        }
        match self.prune(&kv.value) {
            Ok(pruned) => Ok(self.matches(&pruned)),
            Err(_) => crate::rest::decode_kv(kv).map(|obj| self.matches(&obj)),
        }
    }

    /// The object in `json` with only the members in `self.paths`; anything else that stands
    /// where a path expects an object reads as null, which every selector treats alike (no
    /// labels, no field value).
    fn prune(&self, json: &[u8]) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let pruned = Prune(&self.paths).deserialize(&mut de)?;
        de.end()?;
        Ok(pruned)
    }
}

/// Member paths as a tree: `metadata` -> {`labels`, `name`}.
#[derive(Debug, Clone, Default)]
struct Paths {
    /// Keep this member's whole value (a path ends here).
    whole: bool,
    children: Vec<(String, Paths)>,
}

impl Paths {
    fn add<'a>(&mut self, path: impl IntoIterator<Item = &'a str>) {
        let mut node = self;
        for part in path {
            let i = match node.children.iter().position(|(n, _)| n == part) {
                Some(i) => i,
                None => {
                    node.children.push((part.to_owned(), Paths::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
        node.whole = true;
    }
}

/// Decodes a JSON value keeping only what `Paths` name; see [`Filter::prune`].
#[derive(Clone, Copy)]
struct Prune<'p>(&'p Paths);

impl<'de> DeserializeSeed<'de> for Prune<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.whole {
            Value::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Prune<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match self.0.children.iter().find(|(n, _)| *n == key) {
                // A repeated member replaces the one before, as in a decoded `Value`.
                Some((_, p)) => {
                    let v = map.next_value_seed(Prune(p))?;
                    out.insert(key.into_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A member name, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}
