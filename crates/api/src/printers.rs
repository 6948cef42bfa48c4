//! Server-side `kubectl get` tables: the columns and cells kube-apiserver's internal printers
//! produce for each kind (pkg/printers/internalversion), so kubectl renders berth objects exactly
//! as it renders a real cluster's, including the `-o wide` (priority 1) columns.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// One `meta.k8s.io/v1` `TableColumnDefinition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

// Descriptions are the OpenAPI (SwaggerDoc) texts upstream takes them from. kubectl never shows
// them, but clients such as dashboards do, so they are kept close to the real ones.
const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const NODE_ADDRESSES_DESC: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};
const AGE: Column = col("Age", "string", CREATED_DESC);

/// What the generic table convertor serves for kinds without a printer.
static DEFAULT_COLUMNS: [Column; 2] = [NAME, col("Created At", "date", CREATED_DESC)];

static NAMESPACE_COLUMNS: [Column; 3] = [
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

static POD_COLUMNS: [Column; 9] = [
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
    ),
];

static SERVICE_COLUMNS: [Column; 7] = [
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
    ),
];

static ENDPOINTS_COLUMNS: [Column; 3] = [
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
    ),
    AGE,
];

// Upstream leads with LAST SEEN and moves Name to the end as a wide column.
static EVENT_COLUMNS: [Column; 10] = [
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESC,
        priority: 1,
    },
];

static CONFIGMAP_COLUMNS: [Column; 3] = [
    NAME,
    col(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    ),
    AGE,
];

static SECRET_COLUMNS: [Column; 4] = [
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    col(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    ),
    AGE,
];

static SERVICE_ACCOUNT_COLUMNS: [Column; 3] = [
    NAME,
    col(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
    ),
    AGE,
];

static NODE_COLUMNS: [Column; 10] = [
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", NODE_ADDRESSES_DESC),
    wide("External-IP", "string", NODE_ADDRESSES_DESC),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

static ENDPOINT_SLICE_COLUMNS: [Column; 5] = [
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
    ),
    AGE,
];

static DEPLOYMENT_COLUMNS: [Column; 8] = [
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DESC),
    wide("Images", "string", IMAGES_DESC),
    wide(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
    ),
];

static DAEMON_SET_COLUMNS: [Column; 11] = [
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DESC),
    wide("Images", "string", IMAGES_DESC),
    wide(
        "Selector",
        "string",
        "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels.",
    ),
];

static CONTROLLER_REVISION_COLUMNS: [Column; 4] = [
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

static STATEFUL_SET_COLUMNS: [Column; 5] = [
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    wide("Containers", "string", CONTAINERS_DESC),
    wide("Images", "string", IMAGES_DESC),
];

static REPLICA_SET_COLUMNS: [Column; 8] = [
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    col(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DESC),
    wide("Images", "string", IMAGES_DESC),
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    ),
];

static INGRESS_COLUMNS: [Column; 6] = [
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

static NETWORK_POLICY_COLUMNS: [Column; 3] = [
    NAME,
    col(
        "Pod-Selector",
        "string",
        "podSelector selects the pods to which this NetworkPolicy object applies. The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods. In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace.",
    ),
    AGE,
];

#[derive(Clone, Copy)]
enum Printer {
    Namespace,
    Pod,
    Service,
    Endpoints,
    Event,
    ConfigMap,
    Secret,
    ServiceAccount,
    Node,
    EndpointSlice,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    ControllerRevision,
    Ingress,
    NetworkPolicy,
}

fn printer(group: &str, kind: &str) -> Option<Printer> {
    Some(match (group, kind) {
        ("", "Namespace") => Printer::Namespace,
        ("", "Pod") => Printer::Pod,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "Event") | ("events.k8s.io", "Event") => Printer::Event,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "Node") => Printer::Node,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") | ("", "ReplicationController") => Printer::ReplicaSet,
        ("apps", "StatefulSet") => Printer::StatefulSet,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("apps", "ControllerRevision") => Printer::ControllerRevision,
        ("networking.k8s.io", "Ingress") => Printer::Ingress,
        ("networking.k8s.io", "NetworkPolicy") => Printer::NetworkPolicy,
        _ => return None,
    })
}

/// Whether `group`/`kind` has a dedicated printer (otherwise [`columns`] is the default table).
pub fn has_printer(group: &str, kind: &str) -> bool {
    printer(group, kind).is_some()
}

/// Columns for a resource given its API group (`""` for core) and kind. Kinds without a
/// dedicated printer get the default table: Name and Created At.
pub fn columns(group: &str, kind: &str) -> &'static [Column] {
    let Some(p) = printer(group, kind) else {
        return &DEFAULT_COLUMNS;
    };
    match p {
        Printer::Namespace => &NAMESPACE_COLUMNS,
        Printer::Pod => &POD_COLUMNS,
        Printer::Service => &SERVICE_COLUMNS,
        Printer::Endpoints => &ENDPOINTS_COLUMNS,
        Printer::Event => &EVENT_COLUMNS,
        Printer::ConfigMap => &CONFIGMAP_COLUMNS,
        Printer::Secret => &SECRET_COLUMNS,
        Printer::ServiceAccount => &SERVICE_ACCOUNT_COLUMNS,
        Printer::Node => &NODE_COLUMNS,
        Printer::EndpointSlice => &ENDPOINT_SLICE_COLUMNS,
        Printer::Deployment => &DEPLOYMENT_COLUMNS,
        Printer::ReplicaSet => &REPLICA_SET_COLUMNS,
        Printer::StatefulSet => &STATEFUL_SET_COLUMNS,
        Printer::DaemonSet => &DAEMON_SET_COLUMNS,
        Printer::ControllerRevision => &CONTROLLER_REVISION_COLUMNS,
        Printer::Ingress => &INGRESS_COLUMNS,
        Printer::NetworkPolicy => &NETWORK_POLICY_COLUMNS,
    }
}

/// One row's cells, in the order of [`columns`]. kube-apiserver always prints the wide form
/// (kubectl drops priority-1 columns itself), so the wide cells are always present.
pub fn cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    let Some(p) = printer(group, kind) else {
        return default_row(obj);
    };
    match p {
        Printer::Namespace => vec![
            name(obj),
            text(str_at(obj, &["status", "phase"])),
            age(obj, now),
        ],
        Printer::Pod => pod_row(obj, now),
        Printer::Service => service_row(obj, now),
        Printer::Endpoints => vec![name(obj), text(format_endpoints(obj)), age(obj, now)],
        // One table for both versions, as upstream prints them, read in core's field names.
        Printer::Event if group == "events.k8s.io" => {
            event_row(&crate::events::to_core_v1(obj.clone()), now)
        }
        Printer::Event => event_row(obj, now),
        Printer::ConfigMap => {
            let n = map_len(obj, &["data"]) + map_len(obj, &["binaryData"]);
            vec![name(obj), count(n), age(obj, now)]
        }
        Printer::Secret => vec![
            name(obj),
            text(str_at(obj, &["type"])),
            count(map_len(obj, &["data"])),
            age(obj, now),
        ],
        Printer::ServiceAccount => vec![
            name(obj),
            count(list_at(obj, &["secrets"]).len()),
            age(obj, now),
        ],
        Printer::Node => node_row(obj, now),
        Printer::EndpointSlice => vec![
            name(obj),
            text(str_at(obj, &["addressType"])),
            text(discovery_ports(obj)),
            text(discovery_endpoints(obj)),
            age(obj, now),
        ],
        Printer::Deployment => deployment_row(obj, now),
        Printer::ReplicaSet => replica_set_row(obj, now),
        Printer::StatefulSet => stateful_set_row(obj, now),
        Printer::DaemonSet => daemon_set_row(obj, now),
        Printer::ControllerRevision => vec![
            name(obj),
            text(controller_of(obj)),
            Value::from(int_at(obj, &["revision"]).unwrap_or(0)),
            age(obj, now),
        ],
        Printer::Ingress => ingress_row(obj, now),
        Printer::NetworkPolicy => vec![
            name(obj),
            text(format_label_selector(at(obj, &["spec", "podSelector"]))),
            age(obj, now),
        ],
    }
}

/// A duration as kubectl's AGE column shows it: about two significant figures, e.g. `90s`,
/// `5m3s`, `47m`, `5h12m`, `30h`, `2d3h`, `45d`, `3y12d`. Matches apimachinery's
/// `duration.HumanDuration`, including its tolerance of one second of clock skew.
pub fn human_duration(d: SignedDuration) -> String {
    // Truncation toward zero mirrors Go's int(d.Seconds()).
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

// ---- JSON access: every field is optional, missing values read as Go's zero values. ----

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |cur, key| cur.get(key))
        .filter(|v| !v.is_null())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path).and_then(Value::as_i64)
}

fn bool_at(v: &Value, path: &[&str]) -> bool {
    at(v, path).and_then(Value::as_bool).unwrap_or(false)
}

fn list_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn map_len(v: &Value, path: &[&str]) -> usize {
    at(v, path)
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn count(n: usize) -> Value {
    Value::from(n as u64)
}

fn name(obj: &Value) -> Value {
    text(str_at(obj, &["metadata", "name"]))
}

/// A `metav1.Time`/`MicroTime`; Go's zero time (what an absent field decodes to) is `None`.
fn timestamp(v: &Value, path: &[&str]) -> Option<Timestamp> {
    let ts: Timestamp = str_at(v, path).parse().ok()?;
    (ts.as_second() != GO_ZERO_TIME_SECONDS).then_some(ts)
}

/// Seconds of 0001-01-01T00:00:00Z relative to the Unix epoch.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

fn since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        Some(ts) => human_duration(now.duration_since(ts)),
        None => "<unknown>".to_owned(),
    }
}

fn age(obj: &Value, now: Timestamp) -> Value {
    text(since(
        timestamp(obj, &["metadata", "creationTimestamp"]),
        now,
    ))
}

fn default_row(obj: &Value) -> Vec<Value> {
    // The generic convertor formats with Go's time.RFC3339, which drops fractional seconds and
    // prints the zero time for objects that have none.
    let created = timestamp(obj, &["metadata", "creationTimestamp"])
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned());
    vec![name(obj), text(created)]
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_owned()
    } else {
        s.to_owned()
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "<unknown>".to_owned()
    } else {
        s.to_owned()
    }
}

/// `strings.Join(list, ",")` plus upstream's ` + N more...` suffix once `max` entries are shown.
fn list_with_more(list: &[String], more: bool, total: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        return format!("{joined} + {} more...", total - max);
    }
    joined
}

// ---- Pod ----

struct ContainerStatus<'a>(&'a Value);

impl ContainerStatus<'_> {
    fn restarts(&self) -> i64 {
        int_at(self.0, &["restartCount"]).unwrap_or(0)
    }
    fn last_terminated_at(&self) -> Option<Timestamp> {
        timestamp(self.0, &["lastState", "terminated", "finishedAt"])
    }
    fn state(&self, which: &str) -> Option<&Value> {
        at(self.0, &["state", which])
    }
    fn ready(&self) -> bool {
        bool_at(self.0, &["ready"])
    }
}

/// The reason a terminated container shows: its own reason, else `Signal:N`, else `ExitCode:N`.
fn terminated_reason(t: &Value) -> String {
    let reason = str_at(t, &["reason"]);
    if !reason.is_empty() {
        return reason.to_owned();
    }
    match int_at(t, &["signal"]).unwrap_or(0) {
        0 => format!("ExitCode:{}", int_at(t, &["exitCode"]).unwrap_or(0)),
        signal => format!("Signal:{signal}"),
    }
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    list_at(obj, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == type_ && str_at(c, &["status"]) == "True")
}

fn latest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn pod_row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let phase = str_at(pod, &["status", "phase"]);
    let mut reason = match str_at(pod, &["status", "reason"]) {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    // A pod held back by scheduling gates says so rather than plain Pending.
    if list_at(pod, &["status", "conditions"]).iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_owned();
    }

    // Sidecars (init containers with restartPolicy Always) count towards READY like regular
    // containers, and their restarts keep counting after initialization.
    let init_specs = list_at(pod, &["spec", "initContainers"]);
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| str_at(c, &["name"]) == name && str_at(c, &["restartPolicy"]) == "Always")
    };
    let mut total = list_at(pod, &["spec", "containers"]).len();
    total += init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();

    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut sidecar_restarts = 0i64;
    let mut sidecar_last_restart: Option<Timestamp> = None;

    let mut initializing = false;
    for (i, raw) in list_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let cs = ContainerStatus(raw);
        restarts += cs.restarts();
        last_restart = latest(last_restart, cs.last_terminated_at());
        let sidecar = is_sidecar(str_at(raw, &["name"]));
        if sidecar {
            sidecar_restarts += cs.restarts();
            sidecar_last_restart = latest(sidecar_last_restart, cs.last_terminated_at());
        }
        let terminated = cs.state("terminated");
        let waiting_reason = cs.state("waiting").map_or("", |w| str_at(w, &["reason"]));
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]).unwrap_or(0) == 0) {
            continue;
        }
        if sidecar && bool_at(raw, &["started"]) {
            if cs.ready() {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            format!("Init:{}", terminated_reason(t))
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        // Walked last to first so the first container's reason wins, as upstream does.
        for raw in list_at(pod, &["status", "containerStatuses"]).iter().rev() {
            let cs = ContainerStatus(raw);
            restarts += cs.restarts();
            last_restart = latest(last_restart, cs.last_terminated_at());
            let waiting_reason = cs.state("waiting").map_or("", |w| str_at(w, &["reason"]));
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = cs.state("terminated") {
                reason = terminated_reason(t);
            } else if cs.ready() && cs.state("running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // Some containers completed while another still runs: the pod as a whole is running.
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_owned();
        }
    }

    let deleting = at(pod, &["metadata", "deletionTimestamp"]).is_some();
    if deleting && str_at(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts_cell = match last_restart {
        Some(ts) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(ts), now)),
        _ => restarts.to_string(),
    };

    // podIPs is authoritative; a stored object that only has the legacy podIP still shows it.
    let pod_ip = list_at(pod, &["status", "podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));

    let gates = list_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let conditions = list_at(pod, &["status", "conditions"]);
        let passing = gates
            .iter()
            .filter(|g| {
                let wanted = str_at(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };

    vec![
        name(pod),
        text(format!("{ready}/{total}")),
        text(reason),
        text(restarts_cell),
        age(pod, now),
        text(or_none(pod_ip)),
        text(or_none(str_at(pod, &["spec", "nodeName"]))),
        text(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
        text(readiness_gates),
    ]
}

// ---- Service, Endpoints, EndpointSlice ----

fn load_balancer_ingress(obj: &Value) -> Vec<String> {
    // A sorted set: upstream collects into sets.String and lists it.
    let set: BTreeSet<&str> = list_at(obj, &["status", "loadBalancer", "ingress"])
        .iter()
        .filter_map(|ing| {
            let ip = str_at(ing, &["ip"]);
            let host = str_at(ing, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().map(str::to_owned).collect()
}

fn service_type(svc: &Value) -> &str {
    // The API server defaults an absent type to ClusterIP before anything is stored.
    match str_at(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    }
}

fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = list_at(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // Never clipped: the server prints the wide form of this column.
            let mut all = load_balancer_ingress(svc);
            if all.is_empty() && external_ips.is_empty() {
                return "<pending>".to_owned();
            }
            all.extend(external_ips.iter().map(|s| (*s).to_owned()));
            all.join(",")
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = list_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]).unwrap_or(0);
            let protocol = match str_at(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match int_at(p, &["nodePort"]).unwrap_or(0) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    or_none(&pieces.join(","))
}

fn service_row(svc: &Value, now: Timestamp) -> Vec<Value> {
    // clusterIPs[0] is what upstream prints; fall back to the singular field for objects stored
    // without the plural one. Headless services print their literal "None".
    let cluster_ip = list_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(svc, &["spec", "clusterIP"]));
    vec![
        name(svc),
        text(service_type(svc)),
        text(or_none(cluster_ip)),
        text(service_external_ip(svc)),
        text(service_ports(svc)),
        age(svc, now),
        text(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

/// Go's net.JoinHostPort: IPv6 literals are bracketed.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list_at(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut list = Vec::new();
    let mut more = false;
    let mut total = 0usize;
    let mut push = |entry: String| {
        if list.len() == MAX {
            more = true;
        }
        if !more {
            list.push(entry);
        }
        total += 1;
    };
    for ss in subsets {
        let addresses = list_at(ss, &["addresses"]);
        let ports = list_at(ss, &["ports"]);
        if ports.is_empty() {
            // Headless services may publish addresses without ports.
            for a in addresses {
                push(str_at(a, &["ip"]).to_owned());
            }
        } else {
            for p in ports {
                let port = int_at(p, &["port"]).unwrap_or(0);
                for a in addresses {
                    push(join_host_port(str_at(a, &["ip"]), port));
                }
            }
        }
    }
    list_with_more(&list, more, total, MAX)
}

fn list_or_unset(list: &[String], more: bool, total: usize, max: usize) -> String {
    let s = list_with_more(list, more, total, max);
    if s.is_empty() {
        "<unset>".to_owned()
    } else {
        s
    }
}

fn discovery_ports(slice: &Value) -> String {
    const MAX: usize = 3;
    let ports = list_at(slice, &["ports"]);
    let list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| {
            match (
                int_at(p, &["port"]),
                at(p, &["name"]).and_then(Value::as_str),
            ) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_owned(),
                (None, None) => "*".to_owned(),
            }
        })
        .collect();
    list_or_unset(&list, ports.len() > MAX, ports.len(), MAX)
}

fn discovery_endpoints(slice: &Value) -> String {
    const MAX: usize = 3;
    let all: Vec<&str> = list_at(slice, &["endpoints"])
        .iter()
        .flat_map(|e| list_at(e, &["addresses"]).iter().filter_map(Value::as_str))
        .collect();
    let list: Vec<String> = all.iter().take(MAX).map(|s| (*s).to_owned()).collect();
    list_or_unset(&list, all.len() > MAX, all.len(), MAX)
}

// ---- Event ----

fn event_row(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first_seen = match timestamp(ev, &["firstTimestamp"]) {
        Some(ts) => since(Some(ts), now),
        None => since(timestamp(ev, &["eventTime"]), now),
    };
    let mut last_seen = match timestamp(ev, &["lastTimestamp"]) {
        Some(ts) => since(Some(ts), now),
        None => first_seen.clone(),
    };
    let mut n = int_at(ev, &["count"]).unwrap_or(0);
    if let Some(series) = at(ev, &["series"]) {
        last_seen = since(timestamp(series, &["lastObservedTime"]), now);
        n = int_at(series, &["count"]).unwrap_or(0);
    } else if n == 0 {
        // Events recorded through events.k8s.io are singletons without a count.
        n = 1;
    }

    let kind = str_at(ev, &["involvedObject", "kind"]).to_lowercase();
    let target = match str_at(ev, &["involvedObject", "name"]) {
        "" => kind,
        obj_name => format!("{kind}/{obj_name}"),
    };

    let first_non_empty = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else {
            a.to_owned()
        }
    };
    let component = first_non_empty(
        str_at(ev, &["source", "component"]),
        str_at(ev, &["reportingComponent"]),
    );
    let instance = first_non_empty(
        str_at(ev, &["source", "host"]),
        str_at(ev, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };

    vec![
        text(last_seen),
        text(str_at(ev, &["type"])),
        text(str_at(ev, &["reason"])),
        text(target),
        text(str_at(ev, &["involvedObject", "fieldPath"])),
        text(source),
        text(str_at(ev, &["message"]).trim()),
        text(first_seen),
        Value::from(n),
        name(ev),
    ]
}

// ---- Node ----

fn node_row(node: &Value, now: Timestamp) -> Vec<Value> {
    // Only the Ready condition feeds STATUS; the last one listed wins, as with upstream's map.
    let ready = list_at(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_owned());
                }
            } else if k == "kubernetes.io/role" && !v.is_empty() {
                roles.insert(v.to_owned());
            }
        }
    }
    let roles: Vec<String> = roles.into_iter().collect();

    let address = |kind: &str| {
        list_at(node, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == kind)
            .map_or_else(
                || "<none>".to_owned(),
                |a| str_at(a, &["address"]).to_owned(),
            )
    };
    let info = |field: &str| or_unknown(str_at(node, &["status", "nodeInfo", field]));

    vec![
        name(node),
        text(status.join(",")),
        text(or_none(&roles.join(","))),
        age(node, now),
        text(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        text(address("InternalIP")),
        text(address("ExternalIP")),
        text(info("osImage")),
        text(info("kernelVersion")),
        text(info("containerRuntimeVersion")),
    ]
}

// ---- apps ----

fn container_cells(obj: &Value) -> (String, String) {
    let containers = list_at(obj, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// `spec.replicas`, which the API server defaults to 1.
fn desired_replicas(obj: &Value) -> i64 {
    int_at(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn deployment_row(d: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(d);
    let ready = int_at(d, &["status", "readyReplicas"]).unwrap_or(0);
    // Deployments print the bare selector string: empty, not <none>, when it selects nothing.
    let selector =
        selector_string(at(d, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".to_owned());
    vec![
        name(d),
        text(format!("{ready}/{}", desired_replicas(d))),
        Value::from(int_at(d, &["status", "updatedReplicas"]).unwrap_or(0)),
        Value::from(int_at(d, &["status", "availableReplicas"]).unwrap_or(0)),
        age(d, now),
        text(containers),
        text(images),
        text(selector),
    ]
}

fn daemon_set_row(ds: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(ds);
    let count = |f: &str| Value::from(int_at(ds, &["status", f]).unwrap_or(0));
    let node_selector = at(ds, &["spec", "template", "spec", "nodeSelector"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        name(ds),
        count("desiredNumberScheduled"),
        count("currentNumberScheduled"),
        count("numberReady"),
        count("updatedNumberScheduled"),
        count("numberAvailable"),
        text(or_none(&node_selector)),
        age(ds, now),
        text(containers),
        text(images),
        text(format_label_selector(at(ds, &["spec", "selector"]))),
    ]
}

/// The controlling owner as `kind.group/name` (`statefulset.apps/web`), or `<none>`.
fn controller_of(obj: &Value) -> String {
    list_at(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .map_or_else(
            || "<none>".to_owned(),
            |o| {
                let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
                let api = o
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
                match api.split_once('/') {
                    Some((group, _)) => format!("{}.{group}/{name}", kind.to_lowercase()),
                    None => format!("{}/{name}", kind.to_lowercase()),
                }
            },
        )
}

fn stateful_set_row(sts: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(sts);
    let ready = int_at(sts, &["status", "readyReplicas"]).unwrap_or(0);
    vec![
        name(sts),
        text(format!("{ready}/{}", desired_replicas(sts))),
        age(sts, now),
        text(containers),
        text(images),
    ]
}

/// A ReplicaSet's row; a ReplicationController's too, whose selector is a plain map.
fn replica_set_row(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(rs);
    let selector = (str_at(rs, &["kind"]) == "ReplicationController")
        .then(|| serde_json::json!({"matchLabels": at(rs, &["spec", "selector"])}));
    vec![
        name(rs),
        Value::from(desired_replicas(rs)),
        Value::from(int_at(rs, &["status", "replicas"]).unwrap_or(0)),
        Value::from(int_at(rs, &["status", "readyReplicas"]).unwrap_or(0)),
        age(rs, now),
        text(containers),
        text(images),
        text(format_label_selector(
            selector.as_ref().or(at(rs, &["spec", "selector"])),
        )),
    ]
}

// ---- networking ----

fn ingress_row(ing: &Value, now: Timestamp) -> Vec<Value> {
    const MAX: usize = 3;
    let class = at(ing, &["spec", "ingressClassName"])
        .and_then(Value::as_str)
        .unwrap_or("<none>");

    let rules = list_at(ing, &["spec", "rules"]);
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host.to_owned());
        }
    }
    // Upstream counts every rule, host or not, in the "+ N more" suffix.
    let hosts = if hosts.is_empty() {
        "*".to_owned()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };

    let ports = if list_at(ing, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ing),
        text(class),
        text(hosts),
        text(load_balancer_ingress(ing).join(",")),
        text(ports),
        age(ing, now),
    ]
}

// ---- labels and selectors ----

/// `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object) else {
        return "<none>".to_owned();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty, `<error>` when invalid.
fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) => or_none(&s),
        Err(()) => "<error>".to_owned(),
    }
}

/// The `String()` of `metav1.LabelSelectorAsSelector`: requirements sorted by key, set values
/// sorted, e.g. `app=web,tier in (back,front),!legacy`.
fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel else {
        return Ok(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = at(sel, &["matchLabels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in list_at(sel, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let mut values: Vec<&str> = list_at(expr, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let rendered = match str_at(expr, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_owned(), rendered));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2024-05-10T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("valid test timestamp")
    }

    /// Checks one row against expectations and that it lines up with the column definitions.
    fn check(group: &str, kind: &str, obj: Value, expected: Vec<Value>) {
        let got = cells(group, kind, &obj, now());
        assert_eq!(got, expected, "{group}/{kind}");
        assert_eq!(
            got.len(),
            columns(group, kind).len(),
            "{group}/{kind} column count"
        );
    }

    fn meta(name: &str, created: &str) -> Value {
        json!({"name": name, "creationTimestamp": created})
    }

    #[test]
    fn human_duration_boundaries() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (123, "2m3s"),
            (5 * 60 + 3, "5m3s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60 + 30, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60 + 10, "3h25m"),
            (7 * 3600 + 59 * 60, "7h59m"),
            (8 * 3600 + 30 * 60, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400 + 5 * 3600, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (742 * 86400, "2y12d"),
            (8 * 365 * 86400 + 40 * 86400, "8y"),
        ];
        for &(secs, want) in cases {
            assert_eq!(
                human_duration(SignedDuration::from_secs(secs)),
                want,
                "{secs}s"
            );
        }
        // Sub-second skew in the future still reads as now.
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
    }

    #[test]
    fn default_table() {
        assert_eq!(columns("example.com", "Widget").len(), 2);
        assert_eq!(columns("example.com", "Widget")[1].name, "Created At");
        assert_eq!(columns("example.com", "Widget")[1].type_, "date");
        check(
            "example.com",
            "Widget",
            json!({"metadata": meta("w", "2024-05-01T10:00:00.123456Z")}),
            vec![json!("w"), json!("2024-05-01T10:00:00Z")],
        );
        check(
            "example.com",
            "Widget",
            json!({"metadata": {"name": "w"}}),
            vec![json!("w"), json!("0001-01-01T00:00:00Z")],
        );
    }

    #[test]
    fn namespace() {
        check(
            "",
            "Namespace",
            json!({"metadata": meta("default", "2024-05-08T09:00:00Z"), "status": {"phase": "Active"}}),
            vec![json!("default"), json!("Active"), json!("2d3h")],
        );
        check(
            "",
            "Namespace",
            json!({"metadata": {"name": "x"}}),
            vec![json!("x"), json!(""), json!("<unknown>")],
        );
    }

    #[test]
    fn pod_columns_match_upstream() {
        let names: Vec<&str> = columns("", "Pod").iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let wide: Vec<i32> = columns("", "Pod").iter().map(|c| c.priority).collect();
        assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(columns("", "Pod")[0].format, "name");
    }

    fn running(name: &str) -> Value {
        json!({"name": name, "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-05-10T11:00:00Z"}}})
    }

    #[test]
    fn pod_running() {
        check(
            "",
            "Pod",
            json!({
                "metadata": meta("web", "2024-05-10T11:54:57Z"),
                "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]},
                "status": {
                    "phase": "Running",
                    "podIP": "10.0.0.5",
                    "podIPs": [{"ip": "10.0.0.5"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [running("a"), running("b")]
                }
            }),
            vec![
                json!("web"),
                json!("2/2"),
                json!("Running"),
                json!("0"),
                json!("5m3s"),
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ],
        );
    }

    #[test]
    fn pod_pending_without_status() {
        check(
            "",
            "Pod",
            json!({"metadata": meta("p", "2024-05-10T11:59:00Z"), "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}}),
            vec![
                json!("p"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("60s"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ],
        );
    }

    fn pod_status_of(pod: Value) -> (String, String, String) {
        let row = cells("", "Pod", &pod, now());
        let s = |i: usize| row.get(i).and_then(Value::as_str).unwrap_or("").to_owned();
        (s(1), s(2), s(3))
    }

    #[test]
    fn pod_crash_loop_with_restart_age() {
        let pod = json!({
            "metadata": meta("c", "2024-05-10T10:00:00Z"),
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "a", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-10T11:55:00Z"}}
            }]}
        });
        assert_eq!(
            pod_status_of(pod),
            ("0/1".into(), "CrashLoopBackOff".into(), "4 (5m ago)".into())
        );
    }

    #[test]
    fn pod_completed_and_terminated_reasons() {
        let completed = json!({
            "metadata": meta("j", "2024-05-10T10:00:00Z"),
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{
                "name": "a", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }]}
        });
        assert_eq!(pod_status_of(completed).1, "Completed");

        let signalled = json!({
            "metadata": meta("s", "2024-05-10T10:00:00Z"),
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}
            }]}
        });
        assert_eq!(pod_status_of(signalled).1, "Signal:9");

        let exit = json!({
            "metadata": meta("e", "2024-05-10T10:00:00Z"),
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 2}}}]}
        });
        assert_eq!(pod_status_of(exit).1, "ExitCode:2");

        // One container done, another still serving: reads Running when the pod is Ready.
        let partial = json!({
            "metadata": meta("p", "2024-05-10T10:00:00Z"),
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                running("b")
            ]}
        });
        assert_eq!(
            pod_status_of(partial),
            ("1/2".into(), "Running".into(), "0".into())
        );
    }

    #[test]
    fn pod_init_containers() {
        let waiting = json!({
            "metadata": meta("i", "2024-05-10T10:00:00Z"),
            "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "i2", "state": {"running": {}}}
            ], "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]}
        });
        assert_eq!(pod_status_of(waiting).1, "Init:1/2");

        let failing = json!({
            "metadata": meta("i", "2024-05-10T10:00:00Z"),
            "spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        assert_eq!(
            pod_status_of(failing),
            ("0/1".into(), "Init:CrashLoopBackOff".into(), "3".into())
        );

        let init_error = json!({
            "metadata": meta("i", "2024-05-10T10:00:00Z"),
            "spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
            ]}
        });
        assert_eq!(pod_status_of(init_error).1, "Init:Error");

        // A started sidecar counts towards READY and does not hold the pod in Init.
        let sidecar = json!({
            "metadata": meta("sc", "2024-05-10T10:00:00Z"),
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [running("a")]}
        });
        assert_eq!(
            pod_status_of(sidecar),
            ("2/2".into(), "Running".into(), "1".into())
        );
    }

    #[test]
    fn pod_terminating_and_gated() {
        let terminating = json!({
            "metadata": {"name": "t", "creationTimestamp": "2024-05-10T10:00:00Z", "deletionTimestamp": "2024-05-10T11:59:00Z"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [running("a")]}
        });
        assert_eq!(pod_status_of(terminating).1, "Terminating");

        // A pod that already finished keeps its terminal status while being deleted.
        let done = json!({
            "metadata": {"name": "t", "creationTimestamp": "2024-05-10T10:00:00Z", "deletionTimestamp": "2024-05-10T11:59:00Z"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        });
        assert_eq!(pod_status_of(done).1, "Completed");

        let node_lost = json!({
            "metadata": {"name": "t", "creationTimestamp": "2024-05-10T10:00:00Z", "deletionTimestamp": "2024-05-10T11:59:00Z"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "reason": "NodeLost"}
        });
        assert_eq!(pod_status_of(node_lost).1, "Unknown");

        let gated = json!({
            "metadata": meta("g", "2024-05-10T10:00:00Z"),
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
        });
        assert_eq!(pod_status_of(gated).1, "SchedulingGated");

        let evicted = json!({
            "metadata": meta("ev", "2024-05-10T10:00:00Z"),
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "reason": "Evicted"}
        });
        assert_eq!(pod_status_of(evicted).1, "Evicted");
    }

    #[test]
    fn pod_wide_columns() {
        check(
            "",
            "Pod",
            json!({
                "metadata": meta("w", "2024-05-10T11:00:00Z"),
                "spec": {"containers": [{"name": "a"}], "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]},
                "status": {"phase": "Pending", "nominatedNodeName": "node-2", "podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}],
                    "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/dns", "status": "False"}]}
            }),
            vec![
                json!("w"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("60m"),
                json!("fd00::5"),
                json!("<none>"),
                json!("node-2"),
                json!("1/2"),
            ],
        );
    }

    fn svc(spec: Value, status: Value) -> Value {
        json!({"metadata": meta("s", "2024-05-10T11:58:00Z"), "spec": spec, "status": status})
    }

    fn svc_cells(
        ty: &str,
        cluster_ip: &str,
        external: &str,
        ports: &str,
        selector: &str,
    ) -> Vec<Value> {
        vec![
            json!("s"),
            json!(ty),
            json!(cluster_ip),
            json!(external),
            json!(ports),
            json!("2m"),
            json!(selector),
        ]
    }

    #[test]
    fn service_cluster_ip() {
        check(
            "",
            "Service",
            svc(
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"tier": "web", "app": "x"},
                    "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}),
                json!({}),
            ),
            svc_cells(
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "80/TCP,443/TCP,53/UDP",
                "app=x,tier=web",
            ),
        );
        check(
            "",
            "Service",
            svc(
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.11", "externalIPs": ["1.2.3.4", "5.6.7.8"]}),
                json!({}),
            ),
            svc_cells(
                "ClusterIP",
                "10.96.0.11",
                "1.2.3.4,5.6.7.8",
                "<none>",
                "<none>",
            ),
        );
    }

    #[test]
    fn service_headless() {
        check(
            "",
            "Service",
            svc(
                json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432, "protocol": "TCP"}]}),
                json!({}),
            ),
            svc_cells("ClusterIP", "None", "<none>", "5432/TCP", "<none>"),
        );
    }

    #[test]
    fn service_node_port() {
        check(
            "",
            "Service",
            svc(
                json!({"type": "NodePort", "clusterIPs": ["10.96.1.1"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}}),
                json!({}),
            ),
            svc_cells("NodePort", "10.96.1.1", "<none>", "80:30080/TCP", "app=web"),
        );
    }

    #[test]
    fn service_load_balancer() {
        let spec = json!({"type": "LoadBalancer", "clusterIPs": ["10.96.2.2"], "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]});
        check(
            "",
            "Service",
            svc(spec.clone(), json!({"loadBalancer": {}})),
            svc_cells(
                "LoadBalancer",
                "10.96.2.2",
                "<pending>",
                "443:31443/TCP",
                "<none>",
            ),
        );
        check(
            "",
            "Service",
            svc(
                spec.clone(),
                json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}}),
            ),
            svc_cells(
                "LoadBalancer",
                "10.96.2.2",
                "203.0.113.9,lb.example.com",
                "443:31443/TCP",
                "<none>",
            ),
        );
        let mut with_external = spec;
        with_external["externalIPs"] = json!(["198.51.100.1"]);
        check(
            "",
            "Service",
            svc(
                with_external,
                json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}),
            ),
            svc_cells(
                "LoadBalancer",
                "10.96.2.2",
                "203.0.113.9,198.51.100.1",
                "443:31443/TCP",
                "<none>",
            ),
        );
    }

    #[test]
    fn service_external_name() {
        check(
            "",
            "Service",
            svc(
                json!({"type": "ExternalName", "externalName": "db.example.com"}),
                json!({}),
            ),
            svc_cells(
                "ExternalName",
                "<none>",
                "db.example.com",
                "<none>",
                "<none>",
            ),
        );
    }

    fn endpoints(subsets: Value) -> Value {
        json!({"metadata": meta("ep", "2024-05-10T11:59:30Z"), "subsets": subsets})
    }

    #[test]
    fn endpoints_formatting() {
        check(
            "",
            "Endpoints",
            endpoints(json!([])),
            vec![json!("ep"), json!("<none>"), json!("30s")],
        );
        check(
            "",
            "Endpoints",
            endpoints(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]),
            ),
            vec![json!("ep"), json!("10.0.0.1:80,10.0.0.2:80"), json!("30s")],
        );
        check(
            "",
            "Endpoints",
            endpoints(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]),
            ),
            vec![
                json!("ep"),
                json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."),
                json!("30s"),
            ],
        );
        check(
            "",
            "Endpoints",
            endpoints(
                json!([{"addresses": [{"ip": "10.0.0.9"}]}, {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}]),
            ),
            vec![json!("ep"), json!("10.0.0.9,[fd00::1]:8080"), json!("30s")],
        );
    }

    #[test]
    fn endpoint_slice() {
        check(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": meta("web-abc", "2024-05-10T11:00:00Z"), "addressType": "IPv4",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]}),
            vec![
                json!("web-abc"),
                json!("IPv4"),
                json!("80"),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                json!("60m"),
            ],
        );
        check(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": meta("empty", "2024-05-10T11:00:00Z"), "addressType": "IPv6", "ports": [{"name": "dns"}, {}], "endpoints": []}),
            vec![
                json!("empty"),
                json!("IPv6"),
                json!("dns,*"),
                json!("<unset>"),
                json!("60m"),
            ],
        );
    }

    #[test]
    fn event() {
        check(
            "",
            "Event",
            json!({"metadata": meta("web.17c", "2024-05-10T11:00:00Z"), "type": "Warning", "reason": "BackOff",
                "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
                "source": {"component": "kubelet", "host": "node-1"},
                "message": "Back-off restarting failed container\n", "count": 7,
                "firstTimestamp": "2024-05-10T11:00:00Z", "lastTimestamp": "2024-05-10T11:58:30Z"}),
            vec![
                json!("90s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(7),
                json!("web.17c"),
            ],
        );
        // events.k8s.io-style: no count, eventTime only, reporting controller as the source.
        check(
            "",
            "Event",
            json!({"metadata": meta("n.1", "2024-05-10T11:59:00Z"), "type": "Normal", "reason": "Scheduled",
                "involvedObject": {"kind": "Node"}, "reportingComponent": "default-scheduler",
                "eventTime": "2024-05-10T11:59:00.000000Z", "message": "ok"}),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("node"),
                json!(""),
                json!("default-scheduler"),
                json!("ok"),
                json!("60s"),
                json!(1),
                json!("n.1"),
            ],
        );
        let names: Vec<&str> = columns("", "Event").iter().map(|c| c.name).collect();
        assert_eq!(names.first(), Some(&"Last Seen"));
        assert_eq!(names.last(), Some(&"Name"));
    }

    #[test]
    fn config_map_secret_service_account() {
        check(
            "",
            "ConfigMap",
            json!({"metadata": meta("cfg", "2024-05-10T11:00:00Z"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
            vec![json!("cfg"), json!(3), json!("60m")],
        );
        check(
            "",
            "Secret",
            json!({"metadata": meta("tls", "2024-05-10T11:00:00Z"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
            vec![
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("60m"),
            ],
        );
        check(
            "",
            "ServiceAccount",
            json!({"metadata": meta("default", "2024-05-10T11:00:00Z")}),
            vec![json!("default"), json!(0), json!("60m")],
        );
    }

    #[test]
    fn node() {
        check(
            "",
            "Node",
            json!({
                "metadata": {"name": "n1", "creationTimestamp": "2024-04-10T12:00:00Z",
                    "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge"}},
                "spec": {"unschedulable": true},
                "status": {
                    "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0", "containerRuntimeVersion": ""}
                }
            }),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,edge,worker"),
                json!("30d"),
                json!("v1.32.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("<unknown>"),
            ],
        );
        check(
            "",
            "Node",
            json!({"metadata": meta("n2", "2024-05-10T11:00:00Z"), "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
            vec![
                json!("n2"),
                json!("NotReady"),
                json!("<none>"),
                json!("60m"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>"),
            ],
        );
        assert_eq!(
            cells("", "Node", &json!({"metadata": {"name": "n3"}}), now())[1],
            json!("Unknown")
        );
    }

    fn template(containers: Value) -> Value {
        json!({"spec": {"containers": containers}})
    }

    #[test]
    fn deployment() {
        check(
            "apps",
            "Deployment",
            json!({"metadata": meta("web", "2024-05-09T12:00:00Z"),
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "canary"]}]},
                    "template": template(json!([{"name": "app", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]))},
                "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("24h"),
                json!("app,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web,env in (canary,prod)"),
            ],
        );
        // Fresh object: nothing reported yet, replicas defaulted, empty selector prints empty.
        check(
            "apps",
            "Deployment",
            json!({"metadata": meta("new", "2024-05-10T12:00:00Z"), "spec": {"selector": {}, "template": template(json!([]))}}),
            vec![
                json!("new"),
                json!("0/1"),
                json!(0),
                json!(0),
                json!("0s"),
                json!(""),
                json!(""),
                json!(""),
            ],
        );
    }

    #[test]
    fn replica_set() {
        check(
            "apps",
            "ReplicaSet",
            json!({"metadata": meta("web-7d4b", "2024-05-10T11:00:00Z"),
                "spec": {"replicas": 2, "selector": {"matchLabels": {"pod-template-hash": "7d4b", "app": "web"}, "matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}]},
                    "template": template(json!([{"name": "app", "image": "nginx"}]))},
                "status": {"replicas": 2, "readyReplicas": 1}}),
            vec![
                json!("web-7d4b"),
                json!(2),
                json!(2),
                json!(1),
                json!("60m"),
                json!("app"),
                json!("nginx"),
                json!("app=web,!legacy,pod-template-hash=7d4b"),
            ],
        );
        check(
            "apps",
            "ReplicaSet",
            json!({"metadata": meta("bad", "2024-05-10T11:00:00Z"), "spec": {"replicas": 0, "selector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}}),
            vec![
                json!("bad"),
                json!(0),
                json!(0),
                json!(0),
                json!("60m"),
                json!(""),
                json!(""),
                json!("<error>"),
            ],
        );
    }

    #[test]
    fn ingress() {
        check(
            "networking.k8s.io",
            "Ingress",
            json!({"metadata": meta("web", "2024-05-10T11:00:00Z"),
                "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                    "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"ip": "203.0.113.5"}]}}}),
            vec![
                json!("web"),
                json!("nginx"),
                json!("a.example.com,b.example.com,c.example.com + 2 more..."),
                json!("203.0.113.5,203.0.113.7"),
                json!("80, 443"),
                json!("60m"),
            ],
        );
        check(
            "networking.k8s.io",
            "Ingress",
            json!({"metadata": meta("any", "2024-05-10T11:00:00Z"), "spec": {"defaultBackend": {}}}),
            vec![
                json!("any"),
                json!("<none>"),
                json!("*"),
                json!(""),
                json!("80"),
                json!("60m"),
            ],
        );
    }

    #[test]
    fn network_policy() {
        check(
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"metadata": meta("deny-all", "2024-05-10T11:00:00Z"), "spec": {"podSelector": {}}}),
            vec![json!("deny-all"), json!("<none>"), json!("60m")],
        );
        check(
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"metadata": meta("db", "2024-05-10T11:00:00Z"),
                "spec": {"podSelector": {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["web"]}, {"key": "app", "operator": "Exists"}]}}}),
            vec![json!("db"), json!("app,role notin (web)"), json!("60m")],
        );
    }

    #[test]
    fn every_printer_lines_up_with_its_columns() {
        let kinds = [
            ("", "Namespace"),
            ("", "Pod"),
            ("", "Service"),
            ("", "Endpoints"),
            ("", "Event"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "ServiceAccount"),
            ("", "Node"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("networking.k8s.io", "Ingress"),
            ("networking.k8s.io", "NetworkPolicy"),
        ];
        for (group, kind) in kinds {
            assert!(has_printer(group, kind));
            // Garbage input must still produce a full row rather than panic.
            for junk in [
                json!({}),
                json!(null),
                json!([1, 2]),
                json!({"metadata": 5, "spec": "x", "status": []}),
            ] {
                assert_eq!(
                    cells(group, kind, &junk, now()).len(),
                    columns(group, kind).len(),
                    "{group}/{kind}"
                );
            }
        }
    }
}
