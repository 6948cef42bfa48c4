//! Field selectors (`?fieldSelector=metadata.name=foo,status.phase!=Running`), parsed and
//! matched as k8s.io/apimachinery `pkg/fields` does. Which fields a resource supports is
//! the caller's business; this module only parses and compares strings.

use std::fmt;

use serde_json::Value;

/// How a [`FieldRequirement`] compares the field to its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldRequirement {
    /// The field name as written (`metadata.name`); not validated here.
    pub field: String,
    /// Equality or inequality.
    pub operator: FieldOperator,
    /// The value, unescaped.
    pub value: String,
}

impl FieldRequirement {
    fn matches(&self, actual: &str) -> bool {
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// Why a field selector was refused; the `Display` text is kube-apiserver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Unparseable {
        /// The whole selector as given.
        selector: String,
        /// The term that has no operator.
        term: String,
    },
    /// A backslash in a value is followed by something other than `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscape {
        /// The backslash and what follows it (just `\` at the end of a value).
        sequence: String,
    },
    /// A value contains a bare `=` (or `,`); upstream prints the character's code point.
    #[error("invalid field selector: unescaped character in value: {}", u32::from(*.character))]
    UnescapedCharacter {
        /// The character that needed a backslash.
        character: char,
    },
}

/// A conjunction of field requirements. The empty selector matches everything.
///
/// Requirements keep upstream's order (terms sorted as written); equality ignores order,
/// since a conjunction means the same in any order.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl PartialEq for FieldSelector {
    fn eq(&self, other: &Self) -> bool {
        let mut a: Vec<&FieldRequirement> = self.requirements.iter().collect();
        let mut b: Vec<&FieldRequirement> = other.requirements.iter().collect();
        a.sort();
        b.sort();
        a == b
    }
}

impl Eq for FieldSelector {}

impl FieldSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the `?fieldSelector=` syntax (upstream `fields.ParseSelector`): comma-separated
    /// `field=value`, `field==value` or `field!=value`; in values `\,`, `\=` and `\\` stand for
    /// themselves. Nothing is trimmed: `a = b` compares field `a ` with value ` b`, as upstream.
    pub fn parse(selector: &str) -> Result<Self, FieldSelectorError> {
        let mut terms = split_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw_value)) = split_term(term) else {
                return Err(FieldSelectorError::Unparseable {
                    selector: selector.to_owned(),
                    term: term.to_owned(),
                });
            };
            let value = unescape_value(raw_value)?;
            // Upstream's identity transform turns a term with empty field and value into
            // "everything", which then drops out of the conjunction.
            if field.is_empty() && value.is_empty() {
                continue;
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                operator,
                value,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether an object matches; `get` returns the value of a field of that object. A field
    /// `get` does not know reads as its Go zero value, as upstream's `fields.Set` holds it
    /// (`false` for a boolean such as `spec.unschedulable`, `0` for a count, else "").
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(&get(&r.field).unwrap_or_else(|| zero_value(&r.field).to_owned())))
    }

    /// The terms, for callers to check each field is supported (kube-apiserver answers 400
    /// `field label not supported: <field>` otherwise).
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True for the everything selector.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal for a match, if some term pins it (`metadata.name=x`);
    /// lets callers fetch one object instead of listing.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Escapes `\`, `,` and `=` in a value so it can be put in a field selector.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reverses [`escape_value`], refusing stray backslashes and bare `,`/`=`.
pub fn unescape_value(value: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(FieldSelectorError::InvalidEscape {
                    sequence: format!("\\{c}"),
                });
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(FieldSelectorError::UnescapedCharacter { character: c }),
            c => out.push(c),
        }
    }
    if escaped {
        return Err(FieldSelectorError::InvalidEscape {
            sequence: "\\".to_owned(),
        });
    }
    Ok(out)
}

/// Splits on commas not preceded by a backslash escape.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Finds the first operator in a term; at each position `!=` and `==` win over `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// The Go zero value of a selectable field that is not a string, which kube-apiserver's
/// field sets print even when the object leaves the field out.
fn zero_value(field: &str) -> &'static str {
    match field {
        "spec.unschedulable" => "false",
        "status.replicas" | "status.successful" => "0",
        _ => "",
    }
}

/// Reads a dotted field path (`spec.nodeName`) out of an object as the string a field
/// selector compares against: strings as they are, booleans and numbers printed. Missing
/// fields, nulls, objects and arrays give `None`.
pub fn fields_of(obj: &Value, field: &str) -> Option<String> {
    let mut current = obj;
    for part in field.split('.') {
        current = current.as_object()?.get(part)?;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    use FieldOperator::{Equals as Eq_, NotEquals as Ne};

    /// The requirements a selector should parse to (field, operator, value), or its error.
    type Expected<'a> = Result<&'a [(&'a str, FieldOperator, &'a str)], &'a str>;

    /// Parses `input` and compares the requirements (in order) or the error message.
    fn check(input: &str, expected: Expected<'_>) {
        let got = FieldSelector::parse(input);
        match (got, expected) {
            (Ok(sel), Ok(want)) => {
                let got: Vec<(&str, FieldOperator, &str)> = sel
                    .requirements()
                    .iter()
                    .map(|r| (r.field.as_str(), r.operator, r.value.as_str()))
                    .collect();
                assert_eq!(got, want, "requirements of {input:?}");
                assert_eq!(
                    FieldSelector::parse(&sel.to_string()).as_ref(),
                    Ok(&sel),
                    "round trip of {input:?}"
                );
            }
            (Err(e), Err(msg)) => assert_eq!(e.to_string(), msg, "error for {input:?}"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parse() {
        let cases: &[(&str, Expected<'_>)] = &[
            ("", Ok(&[])),
            (",", Ok(&[])),
            ("=", Ok(&[])),
            ("!=", Ok(&[])),
            ("metadata.name=foo", Ok(&[("metadata.name", Eq_, "foo")])),
            ("metadata.name==foo", Ok(&[("metadata.name", Eq_, "foo")])),
            (
                "status.phase!=Running",
                Ok(&[("status.phase", Ne, "Running")]),
            ),
            ("spec.nodeName=", Ok(&[("spec.nodeName", Eq_, "")])),
            (
                "status.phase!=Running,metadata.name=a",
                Ok(&[("metadata.name", Eq_, "a"), ("status.phase", Ne, "Running")]),
            ),
            ("a = b", Ok(&[("a ", Eq_, " b")])),
            ("x=a\\,b\\=c\\\\", Ok(&[("x", Eq_, "a,b=c\\")])),
            ("x=!y", Ok(&[("x", Eq_, "!y")])),
            (
                "x!==",
                Err("invalid field selector: unescaped character in value: 61"),
            ),
            (
                "x=a=b",
                Err("invalid field selector: unescaped character in value: 61"),
            ),
            (
                "x=a\\b",
                Err("invalid field selector: invalid escape sequence: \\b"),
            ),
            (
                "x=a\\",
                Err("invalid field selector: invalid escape sequence: \\"),
            ),
            (
                "a=b,nonsense",
                Err("invalid selector: 'a=b,nonsense'; can't understand 'nonsense'"),
            ),
        ];
        for (input, expected) in cases {
            check(input, *expected);
        }
    }

    #[test]
    fn display_escapes_and_normalises() {
        let sel = FieldSelector::parse("b==x\\,y,a!=1");
        assert_eq!(sel.map(|s| s.to_string()).as_deref(), Ok("a!=1,b=x\\,y"));
    }

    #[test]
    fn matching() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "unschedulable": true, "replicas": 3},
            "status": {"phase": "Running"},
        });
        let get = |f: &str| fields_of(&pod, f);
        let table: &[(&str, bool)] = &[
            ("", true),
            ("metadata.name=web-1", true),
            ("metadata.name=web-2", false),
            ("metadata.name!=web-2,status.phase=Running", true),
            ("status.phase!=Running", false),
            ("spec.unschedulable=true", true),
            ("spec.replicas=3", true),
            // Absent fields read as "", as upstream does.
            ("spec.hostname=", true),
            ("spec.hostname!=x", true),
            ("spec.hostname=x", false),
            // Absent booleans and counts read as Go's zero values.
            ("status.replicas=0", true),
        ];
        for (input, want) in table {
            let sel = FieldSelector::parse(input);
            assert_eq!(sel.map(|s| s.matches(get)), Ok(*want), "{input:?}");
        }
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        let on_node =
            |sel: &str| FieldSelector::parse(sel).map(|s| s.matches(|f: &str| fields_of(&node, f)));
        assert_eq!(on_node("spec.unschedulable=false"), Ok(true));
        assert_eq!(on_node("spec.unschedulable!=true"), Ok(true));
        assert_eq!(on_node("spec.unschedulable=true"), Ok(false));
        assert_eq!(fields_of(&pod, "spec"), None);
        assert_eq!(fields_of(&pod, "metadata.name.x"), None);
        assert_eq!(
            FieldSelector::parse("metadata.name=a,metadata.namespace=b")
                .ok()
                .as_ref()
                .and_then(|s| s.requires_exact_match("metadata.namespace")),
            Some("b")
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(
            input in prop_oneof![any::<String>(), "[ab=!,\\\\ é]{0,16}", "([ab]{0,2}(=|==|!=)[ab,=\\\\]{0,3},?){0,4}"]
        ) {
            if let Ok(sel) = FieldSelector::parse(&input) {
                let printed = sel.to_string();
                prop_assert_eq!(FieldSelector::parse(&printed), Ok(sel), "printed as {:?}", printed);
            }
        }
    }
}
