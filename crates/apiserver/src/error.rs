//! `ApiError`: every way a request fails, rendered as the `metav1.Status` body kube-apiserver
//! sends, so kubectl prints the same text it prints against a real cluster.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_api::FieldErrors;
use berth_api::resources::Resource;
use serde_json::Value;

/// A failed request. Each variant maps to one HTTP code and `Status.reason`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{} \"{name}\" not found", resource.qualified_plural())]
    NotFound {
        resource: &'static Resource,
        name: String,
    },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{} \"{name}\" already exists", resource.qualified_plural())]
    AlreadyExists {
        resource: &'static Resource,
        name: String,
    },
    #[error("Operation cannot be fulfilled on {} \"{name}\": {detail}", resource.qualified_plural())]
    Conflict {
        resource: &'static Resource,
        name: String,
        detail: String,
    },
    #[error("{kind} \"{name}\" is invalid: {}", render_causes(errors))]
    Invalid {
        resource: &'static Resource,
        kind: &'static str,
        name: String,
        errors: FieldErrors,
    },
    /// Invalid request options (`PatchOptions`, ...), as `meta.k8s.io` objects.
    #[error("{kind}.meta.k8s.io \"\" is invalid: {}", render_causes(errors))]
    InvalidOptions {
        kind: &'static str,
        errors: FieldErrors,
    },
    /// Server-side apply would change fields other managers own: the message and, per
    /// conflict, the owner (`"kubectl" using apps/v1`) and the field path (`.spec.replicas`).
    #[error("{message}")]
    ApplyConflict {
        message: String,
        conflicts: Vec<(String, String)>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Gone(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("Request entity too large: limit is {0}")]
    TooLarge(usize),
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(&'static str),
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    Internal(String),
    /// A list at a resourceVersion the store has not reached (kube-apiserver's 504).
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: i64, current: i64 },
    /// Worded as kube-apiserver words a storage failure, with the causes (`No space left on
    /// device`) so the user sees why.
    #[error("Internal error occurred: {}", chain(.0))]
    Store(#[source] berth_store::Error),
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One `Status` cause per field error, as kube-apiserver lists them.
fn field_causes(errors: &FieldErrors) -> Vec<Cause> {
    errors
        .iter()
        .map(|e| Cause {
            reason: e.kind.cause_type(),
            message: e.message(),
            field: e.path.clone(),
        })
        .collect()
}

fn render_causes(errors: &FieldErrors) -> String {
    match errors.as_slice() {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::AlreadyExists { .. } | Self::Conflict { .. } | Self::ApplyConflict { .. } => {
                StatusCode::CONFLICT
            }
            Self::Invalid { .. } | Self::InvalidOptions { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Gone(_) => StatusCode::GONE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TooLargeResourceVersion { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::NoRoute => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } | Self::ApplyConflict { .. } => "Conflict",
            Self::Invalid { .. } | Self::InvalidOptions { .. } => "Invalid",
            Self::BadRequest(_) => "BadRequest",
            Self::Forbidden(_) => "Forbidden",
            Self::Gone(_) => "Expired",
            Self::Unauthorized => "Unauthorized",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::TooLarge(_) => "RequestEntityTooLarge",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::ServiceUnavailable(_) => "ServiceUnavailable",
            Self::Internal(_) | Self::Store(_) => "InternalError",
            Self::TooLargeResourceVersion { .. } => "Timeout",
        }
    }

    fn details(&self) -> Option<Details> {
        let group = |r: &Resource| (!r.group.is_empty()).then_some(r.group);
        match self {
            Self::NotFound { resource, name }
            | Self::AlreadyExists { resource, name }
            | Self::Conflict { resource, name, .. } => Some(Details {
                name: name.clone(),
                group: group(resource),
                kind: resource.plural,
                causes: Vec::new(),
                retry_after_seconds: None,
            }),
            Self::TooLargeResourceVersion { .. } => Some(Details {
                name: String::new(),
                group: None,
                kind: "",
                causes: vec![Cause {
                    reason: "ResourceVersionTooLarge",
                    message: "Too large resource version".into(),
                    field: String::new(),
                }],
                retry_after_seconds: Some(1),
            }),
            Self::ApplyConflict { conflicts, .. } => Some(Details {
                name: String::new(),
                group: None,
                kind: "",
                causes: conflicts
                    .iter()
                    .map(|(owner, path)| Cause {
                        reason: "FieldManagerConflict",
                        message: format!("conflict with {owner}"),
                        field: path.clone(),
                    })
                    .collect(),
                retry_after_seconds: None,
            }),
            Self::InvalidOptions { kind, errors } => Some(Details {
                name: String::new(),
                group: Some("meta.k8s.io"),
                kind,
                causes: field_causes(errors),
                retry_after_seconds: None,
            }),
            Self::Invalid {
                resource,
                kind,
                name,
                errors,
            } => Some(Details {
                name: name.clone(),
                group: group(resource),
                kind,
                causes: field_causes(errors),
                retry_after_seconds: None,
            }),
            _ => None,
        }
    }

    /// The `metav1.Status` body, its fields in Go's order.
    pub fn status(&self) -> Status {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: self.to_string(),
            reason: self.reason(),
            details: self.details(),
            code: self.code().as_u16(),
        }
    }
}

/// `metav1.Status` as kube-apiserver writes it: fields in the Go struct's order, so a client
/// comparing bodies byte for byte sees the same text.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: String,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    code: u16,
}

impl Status {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Debug, serde::Serialize)]
struct Empty {}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'static str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<Cause>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u32>,
}

#[derive(Debug, serde::Serialize)]
struct Cause {
    reason: &'static str,
    message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    field: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, Self::Store(_) | Self::Internal(_)) {
            tracing::error!(error = %self, "request failed");
        }
        // Go's encoder ends the body with a newline.
        let mut body = serde_json::to_string(&self.status()).unwrap_or_default();
        body.push('\n');
        let mut resp = (self.code(), body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl From<berth_store::Error> for ApiError {
    /// History the store no longer has is 410 Gone, so clients re-list, as with etcd
    /// compaction behind kube-apiserver; a watcher that fell too far behind is treated alike.
    fn from(e: berth_store::Error) -> Self {
        match e {
            berth_store::Error::Compacted {
                requested,
                compacted,
            } => ApiError::Gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            berth_store::Error::Lagged { revision } => ApiError::Gone(format!(
                "too old resource version: {revision} (the watch fell behind)"
            )),
            e => ApiError::Store(e),
        }
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::FieldError;
    use berth_api::resources::by_kind;

    fn svc() -> &'static Resource {
        by_kind("", "Service").expect("registered")
    }

    #[test]
    fn statuses_read_like_kube_apiserver() {
        let e = ApiError::NotFound {
            resource: svc(),
            name: "web".into(),
        };
        assert_eq!(e.to_string(), "services \"web\" not found");
        assert_eq!(e.status().to_value()["code"], 404);
        assert_eq!(
            serde_json::to_string(&e.status()).expect("json"),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"services \"web\" not found","reason":"NotFound","details":{"name":"web","kind":"services"},"code":404}"#
        );
        let e = ApiError::Invalid {
            resource: svc(),
            kind: "Service",
            name: "web".into(),
            errors: vec![FieldError::required("spec.ports", "")],
        };
        assert_eq!(
            e.to_string(),
            "Service \"web\" is invalid: spec.ports: Required value"
        );
        assert_eq!(
            e.status().to_value()["details"]["causes"][0]["field"],
            "spec.ports"
        );
        let deploy = by_kind("apps", "Deployment").expect("registered");
        let e = ApiError::AlreadyExists {
            resource: deploy,
            name: "d".into(),
        };
        assert_eq!(e.to_string(), "deployments.apps \"d\" already exists");
        assert_eq!(e.status().to_value()["details"]["group"], "apps");
    }
}
