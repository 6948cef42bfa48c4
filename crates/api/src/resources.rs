//! The resources berth serves: group, version, kind, plural and the facts discovery publishes
//! about each (scope, short names, categories, verbs, subresources, selectable fields).

/// What the API server knows about one resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; "" for the core group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in URLs (`services`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `.../{name}/{subresource}`.
    pub subresources: &'static [Subresource],
    /// Field-selector labels beyond `metadata.name` / `metadata.namespace`, as kube-apiserver's
    /// per-resource `GetAttrs` allow them; anything else is `400 field label not supported`.
    pub selectable_fields: &'static [&'static str],
    /// Whether `status` is owned by a `status` subresource (then create resets it and a plain
    /// update keeps the stored one, as kube-apiserver's strategies do).
    pub has_status: bool,
    /// Whether `metadata.generation` tracks changes of everything but status and metadata.
    pub has_generation: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Status,
    Scale,
    Log,
    Exec,
    Attach,
    PortForward,
    Proxy,
    Binding,
    Eviction,
    Finalize,
    Token,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Scale => "scale",
            Self::Log => "log",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
            Self::Proxy => "proxy",
            Self::Binding => "binding",
            Self::Eviction => "eviction",
            Self::Finalize => "finalize",
            Self::Token => "token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ALL_SUBRESOURCES.iter().copied().find(|sub| sub.name() == s)
    }

    /// The kind a subresource accepts and returns, as published in discovery.
    pub fn response_kind(self, parent: &Resource) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Scale => ("autoscaling", "v1", "Scale"),
            Self::Binding => ("", "v1", "Binding"),
            Self::Eviction => ("policy", "v1", "Eviction"),
            Self::Token => ("authentication.k8s.io", "v1", "TokenRequest"),
            Self::Exec | Self::Attach | Self::PortForward | Self::Proxy => ("", "v1", "Status"),
            Self::Log => ("", "v1", "Pod"),
            Self::Status | Self::Finalize => (parent.group, parent.version, parent.kind),
        }
    }

    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Self::Status | Self::Scale => &["get", "patch", "update"],
            Self::Log => &["get"],
            Self::Exec | Self::Attach | Self::PortForward => &["create", "get"],
            Self::Proxy => &["create", "delete", "get", "patch", "update"],
            Self::Binding | Self::Eviction | Self::Token => &["create"],
            Self::Finalize => &["update"],
        }
    }
}

const ALL_SUBRESOURCES: &[Subresource] = &[
    Subresource::Status,
    Subresource::Scale,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Attach,
    Subresource::PortForward,
    Subresource::Proxy,
    Subresource::Binding,
    Subresource::Eviction,
    Subresource::Finalize,
    Subresource::Token,
];

/// The verbs every berth resource supports.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        selectable_fields: &[],
        has_status: false,
        has_generation: false,
    }
}

use Subresource as S;

/// Every resource berth serves, in discovery order.
pub static RESOURCES: &[Resource] = &[
    Resource {
        namespaced: false,
        short_names: &["ns"],
        subresources: &[S::Status, S::Finalize],
        selectable_fields: &["status.phase"],
        has_status: true,
        ..res("", "v1", "Namespace", "namespaces", "namespace")
    },
    Resource {
        short_names: &["po"],
        categories: &["all"],
        subresources: &[
            S::Status,
            S::Log,
            S::Exec,
            S::Attach,
            S::PortForward,
            S::Binding,
            S::Eviction,
            S::Proxy,
        ],
        selectable_fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        has_status: true,
        ..res("", "v1", "Pod", "pods", "pod")
    },
    Resource {
        short_names: &["svc"],
        categories: &["all"],
        subresources: &[S::Status, S::Proxy],
        has_status: true,
        ..res("", "v1", "Service", "services", "service")
    },
    Resource {
        short_names: &["ep"],
        ..res("", "v1", "Endpoints", "endpoints", "endpoints")
    },
    Resource {
        short_names: &["ev"],
        selectable_fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ..res("", "v1", "Event", "events", "event")
    },
    Resource {
        short_names: &["cm"],
        ..res("", "v1", "ConfigMap", "configmaps", "configmap")
    },
    Resource {
        selectable_fields: &["type"],
        ..res("", "v1", "Secret", "secrets", "secret")
    },
    Resource {
        short_names: &["sa"],
        subresources: &[S::Token],
        ..res(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
        )
    },
    Resource {
        namespaced: false,
        short_names: &["no"],
        subresources: &[S::Status, S::Proxy],
        selectable_fields: &["spec.unschedulable"],
        has_status: true,
        ..res("", "v1", "Node", "nodes", "node")
    },
    Resource {
        categories: &["all"],
        short_names: &["rc"],
        subresources: &[S::Status, S::Scale],
        selectable_fields: &["status.replicas"],
        has_status: true,
        has_generation: true,
        ..res(
            "",
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            "replicationcontroller",
        )
    },
    Resource {
        categories: &["all"],
        short_names: &["ds"],
        subresources: &[S::Status],
        has_status: true,
        has_generation: true,
        ..res("apps", "v1", "DaemonSet", "daemonsets", "daemonset")
    },
    Resource {
        ..res(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            "controllerrevision",
        )
    },
    Resource {
        categories: &["all"],
        short_names: &["deploy"],
        subresources: &[S::Status, S::Scale],
        has_status: true,
        has_generation: true,
        ..res("apps", "v1", "Deployment", "deployments", "deployment")
    },
    Resource {
        categories: &["all"],
        short_names: &["rs"],
        subresources: &[S::Status, S::Scale],
        selectable_fields: &["status.replicas"],
        has_status: true,
        has_generation: true,
        ..res("apps", "v1", "ReplicaSet", "replicasets", "replicaset")
    },
    Resource {
        categories: &["all"],
        short_names: &["sts"],
        subresources: &[S::Status, S::Scale],
        has_status: true,
        has_generation: true,
        ..res("apps", "v1", "StatefulSet", "statefulsets", "statefulset")
    },
    Resource {
        ..res(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
        )
    },
    Resource {
        short_names: &["ing"],
        subresources: &[S::Status],
        has_status: true,
        has_generation: true,
        ..res("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress")
    },
    Resource {
        namespaced: false,
        has_generation: true,
        ..res(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            "ingressclass",
        )
    },
    Resource {
        short_names: &["netpol"],
        has_generation: true,
        ..res(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "networkpolicy",
        )
    },
    // Kept in core Events' storage, converted on the way (`events::to_events_v1`); field
    // selectors name its fields (`regarding.kind`), as upstream's label conversion allows.
    Resource {
        short_names: &["ev"],
        selectable_fields: &[
            "reason",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reportingController",
            "type",
        ],
        ..res("events.k8s.io", "v1", "Event", "events", "event")
    },
];

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `services` or `deployments.apps`: how kube-apiserver names the resource in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    pub fn is_selectable(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || self.selectable_fields.contains(&field)
    }
}

/// Looks a resource up by group and plural, as URLs name it.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group and kind, as objects name themselves.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The served API groups (not the core group), each with its single version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        for r in RESOURCES {
            assert_eq!(by_plural(r.group, r.version, r.plural), Some(r));
            assert_eq!(by_kind(r.group, r.kind), Some(r));
        }
        assert_eq!(
            by_plural("apps", "v1", "deployments").map(|r| r.kind),
            Some("Deployment")
        );
        assert_eq!(by_plural("", "v1", "deployments"), None);
        assert_eq!(groups()[0], ("apps", "v1"));
    }

    #[test]
    fn names_for_messages() {
        let d = by_kind("apps", "Deployment").map(|r| r.qualified_plural());
        assert_eq!(d.as_deref(), Some("deployments.apps"));
        assert_eq!(
            by_kind("", "Service").map(|r| r.api_version()).as_deref(),
            Some("v1")
        );
    }
}
