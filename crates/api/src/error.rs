//! Field-level validation errors, shaped like kube-apiserver's `field.Error` so that the
//! `Status` causes we return read exactly as kubectl prints them against a real cluster.

use std::fmt;

/// What is wrong with a field; the names follow `metav1.CauseType` (`FieldValueInvalid`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

impl FieldErrorKind {
    /// The `reason` of a `StatusCause`.
    pub fn cause_type(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::Duplicate => "Duplicate value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
        }
    }
}

/// A value quoted in an error message the way Go's `%#v`/`%q` shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    None,
    Str(String),
    Int(i64),
    Bool(bool),
    /// Already rendered as Go would (`[]string{"10.0.0.1"}`).
    Raw(String),
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_owned())
    }
}
impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}
impl From<i64> for BadValue {
    fn from(v: i64) -> Self {
        BadValue::Int(v)
    }
}
impl From<i32> for BadValue {
    fn from(v: i32) -> Self {
        BadValue::Int(v.into())
    }
}
impl From<bool> for BadValue {
    fn from(v: bool) -> Self {
        BadValue::Bool(v)
    }
}

/// One problem with one field: `path` is the JSON path kube-apiserver names
/// (`spec.ports[1].name`), `detail` the human explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub path: String,
    pub value: BadValue,
    pub detail: String,
}

impl FieldError {
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, path, BadValue::None, detail)
    }
    pub fn invalid(
        path: impl Into<String>,
        value: impl Into<BadValue>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(FieldErrorKind::Invalid, path, value.into(), detail)
    }
    pub fn duplicate(path: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Self::new(FieldErrorKind::Duplicate, path, value.into(), "")
    }
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, path, BadValue::None, detail)
    }
    pub fn too_long(path: impl Into<String>, max: usize) -> Self {
        Self::new(
            FieldErrorKind::TooLong,
            path,
            BadValue::None,
            format!("may not be more than {max} bytes"),
        )
    }
    /// `supported` is rendered as kube-apiserver does: each value quoted, comma separated.
    pub fn not_supported(
        path: impl Into<String>,
        value: impl Into<BadValue>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self::new(
            FieldErrorKind::NotSupported,
            path,
            value.into(),
            format!("supported values: {}", list.join(", ")),
        )
    }

    pub fn new(
        kind: FieldErrorKind,
        path: impl Into<String>,
        value: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            path: path.into(),
            value,
            detail: detail.into(),
        }
    }

    /// The part after `path: ` — what goes into a `StatusCause.message`.
    pub fn message(&self) -> String {
        let mut s = self.kind.label().to_owned();
        match &self.value {
            BadValue::None => {}
            BadValue::Str(v) => s.push_str(&format!(": {}", go_quote(v))),
            BadValue::Int(v) => s.push_str(&format!(": {v}")),
            BadValue::Bool(v) => s.push_str(&format!(": {v}")),
            BadValue::Raw(v) => s.push_str(&format!(": {v}")),
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message())
    }
}

impl std::error::Error for FieldError {}

/// Quotes a string like Go's `%q` does for printable text.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every problem found in one object; validation collects them all because kubectl prints all.
pub type FieldErrors = Vec<FieldError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_kube_apiserver() {
        let e = FieldError::invalid(
            "spec.clusterIP",
            "1.2.3.4",
            "provided IP is not in the valid range",
        );
        assert_eq!(
            e.to_string(),
            "spec.clusterIP: Invalid value: \"1.2.3.4\": provided IP is not in the valid range"
        );
        assert_eq!(
            FieldError::required("spec.ports", "").to_string(),
            "spec.ports: Required value"
        );
        assert_eq!(
            FieldError::duplicate("spec.ports[1].name", "http").to_string(),
            "spec.ports[1].name: Duplicate value: \"http\""
        );
        assert_eq!(
            FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "NodePort"]).to_string(),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\""
        );
    }
}
