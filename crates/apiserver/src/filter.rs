//! `?labelSelector=` and `?fieldSelector=` as one predicate over objects, shared by list,
//! watch and deletecollection.

use berth_api::fields::{self, FieldSelector};
use berth_api::resources::Resource;
use berth_api::selector::Selector;
use serde_json::Value;

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
        Ok(Self {
            labels,
            fields,
            name: None,
        })
    }

    pub fn with_name(mut self, name: Option<String>) -> Self {
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
}
