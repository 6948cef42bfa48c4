//! Decoder for Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), as
//! real kubectl sends them for `kubectl create <subcommand>`, into the Kubernetes JSON form berth
//! stores. Schema-driven: static tables give each message's field numbers, JSON names and types.
//!
//! The wire-format reader is hand-written because the Kubernetes `generated.proto` schemas are
//! not available as descriptors in any maintained crate, so `prost-reflect` cannot be used, and
//! the prost structs of `k8s-pb` would need a second, lossy struct-to-JSON conversion anyway.
//! Field numbers come from `generated.proto` (via `k8s-pb` 0.9.0); JSON names from the Go
//! `json:` tags (via `k8s-openapi` serde renames).
//!
//! JSON emission follows what the Go API server would produce after decoding the same bytes,
//! which is what kubectl would have sent had it used JSON. Go's gogo-protobuf marshaller writes
//! every non-pointer field, even when it holds the zero value (ObjectMeta arrives with
//! `namespace: ""`, `uid: ""`, `generation: 0`, ...), so for fields that are non-pointer Go
//! values tagged `omitempty` the zero value is dropped, exactly as Go's JSON encoder would.
//! Pointer fields and fields without `omitempty` are emitted whenever they are on the wire,
//! zero or not (so `replicas: 0` survives). Absent fields are never invented.

use serde_json::{Map, Value};

/// The Content-Type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4-byte prefix of every Kubernetes protobuf body.
const MAGIC: &[u8; 4] = b"k8s\0";

/// Nesting limit. The schema has no cycles, so valid input never gets near it; it is a
/// belt-and-braces bound on recursion should a recursive message ever be added.
const MAX_DEPTH: usize = 32;

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    #[error("protobuf body does not start with the Kubernetes magic prefix \"k8s\\0\"")]
    BadMagic,
    /// The input ended inside a varint, key or length-delimited value.
    #[error("protobuf input is truncated")]
    Truncated,
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("protobuf varint overflows 64 bits")]
    VarintOverflow,
    /// A field key with field number 0 or above 2^29-1.
    #[error("protobuf field number {0} is out of range")]
    BadFieldNumber(u64),
    /// Wire types 3 and 4 (groups) and 6, 7 never occur in Kubernetes messages.
    #[error("protobuf wire type {0} is not supported")]
    BadWireType(u8),
    /// The envelope names an apiVersion/kind this decoder has no schema for.
    #[error("no protobuf schema for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// A field number the message's schema does not define.
    #[error("unknown field number {number} in protobuf message {message}")]
    UnknownField {
        /// The message, e.g. `core.v1.ServiceSpec`.
        message: &'static str,
        /// The field number found on the wire.
        number: u32,
    },
    /// A known field encoded with a wire type that does not match its type.
    #[error("field {message}.{field} has wire type {wire_type}, which does not match its type")]
    WrongWireType {
        /// The message, e.g. `core.v1.ServiceSpec`.
        message: &'static str,
        /// The field's JSON name.
        field: &'static str,
        /// The wire type found.
        wire_type: u8,
    },
    /// A known field whose message type this decoder does not implement.
    #[error("field {message}.{field} is not supported in protobuf bodies; send JSON instead")]
    UnsupportedField {
        /// The message, e.g. `core.v1.PodSpec`.
        message: &'static str,
        /// The field's JSON name, e.g. `affinity`.
        field: &'static str,
    },
    /// A string field that is not UTF-8.
    #[error("field {message}.{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The message.
        message: &'static str,
        /// The field's JSON name.
        field: &'static str,
    },
    /// A value that is well-formed protobuf but has no JSON form.
    #[error("field {message}.{field}: {reason}")]
    BadValue {
        /// The message.
        message: &'static str,
        /// The field's JSON name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `runtime.Unknown.contentEncoding` set: Kubernetes defines no encodings here.
    #[error("unsupported protobuf content encoding {0:?}")]
    UnsupportedEncoding(String),
    /// `runtime.Unknown.contentType` names something other than protobuf.
    #[error("unsupported protobuf content type {0:?}")]
    UnsupportedContentType(String),
    /// Messages nested deeper than the decoder allows.
    #[error("protobuf messages nested too deeply")]
    TooDeep,
}

type Result<T> = std::result::Result<T, ProtoError>;

/// Decodes a whole request body: the 4-byte magic "k8s\0", then a runtime.Unknown message
/// (typeMeta{apiVersion, kind}, raw, contentEncoding, contentType), then `raw` as the message for
/// that apiVersion/kind. Returns the object as Kubernetes JSON, including "apiVersion" and "kind".
pub fn decode(body: &[u8]) -> Result<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::BadMagic)?;
    let mut type_meta = Map::new();
    let mut raw: &[u8] = &[];
    let mut r = Reader::new(rest);
    // runtime.Unknown is read by hand because `raw` must stay bytes, not become base64.
    while !r.done() {
        let (number, wire_type) = r.key()?;
        let field = match number {
            1 => "typeMeta",
            2 => "raw",
            3 => "contentEncoding",
            4 => "contentType",
            _ => {
                return Err(ProtoError::UnknownField {
                    message: UNKNOWN,
                    number,
                });
            }
        };
        if wire_type != LEN {
            return Err(ProtoError::WrongWireType {
                message: UNKNOWN,
                field,
                wire_type,
            });
        }
        let bytes = r.len_delimited()?;
        match number {
            1 => decode_fields(bytes, &RUNTIME_TYPE_META, 1, &mut type_meta)?,
            2 => raw = bytes,
            3 => {
                // Kubernetes defines no content encodings; a set one would mean gzip or similar.
                let value = utf8(bytes, UNKNOWN, field)?;
                if !value.is_empty() {
                    return Err(ProtoError::UnsupportedEncoding(value));
                }
            }
            _ => {
                // Empty means "same as the envelope"; anything but protobuf would need another decoder.
                let value = utf8(bytes, UNKNOWN, field)?;
                if !value.is_empty() && value != MEDIA_TYPE {
                    return Err(ProtoError::UnsupportedContentType(value));
                }
            }
        }
    }
    let text = |key: &str| {
        type_meta
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let Some(schema) = root_schema(&api_version, &kind) else {
        return Err(ProtoError::UnknownKind { api_version, kind });
    };
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    decode_fields(raw, schema, 1, &mut object)?;
    Ok(Value::Object(object))
}

const UNKNOWN: &str = "runtime.Unknown";

fn root_schema(api_version: &str, kind: &str) -> Option<&'static Message> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "Service") => &SERVICE,
        ("v1", "ConfigMap") => &CONFIG_MAP,
        ("v1", "Secret") => &SECRET,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("authentication.k8s.io/v1", "TokenRequest") => &TOKEN_REQUEST,
        ("v1", "Pod") => &POD,
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        ("apps/v1", "ReplicaSet") => &REPLICA_SET,
        ("networking.k8s.io/v1", "Ingress") => &INGRESS,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Wire format.

const VARINT: u8 = 0;
const LEN: u8 = 2;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(ProtoError::Truncated)?;
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the single top bit of a 64-bit value.
            if i == 9 && bits > 1 {
                return Err(ProtoError::VarintOverflow);
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::VarintOverflow)
    }

    /// Reads a field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8)> {
        let key = self.varint()?;
        let number = key >> 3;
        let wire_type = (key & 7) as u8; // masked to 3 bits, cannot truncate
        if number == 0 || number > (1 << 29) - 1 {
            return Err(ProtoError::BadFieldNumber(number));
        }
        if !matches!(wire_type, 0 | 1 | 2 | 5) {
            return Err(ProtoError::BadWireType(wire_type));
        }
        Ok((
            u32::try_from(number).map_err(|_| ProtoError::BadFieldNumber(number))?,
            wire_type,
        ))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(ProtoError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Schema.

/// A field's type, which decides both its wire type and its JSON form.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    I32,
    I64,
    /// `[]byte`: JSON carries it as standard base64.
    Bytes,
    Msg(&'static Message),
    /// A Go embedded struct (`json:",inline"`): its fields land in the parent JSON object.
    Inline(&'static Message),
    /// `intstr.IntOrString` → JSON number or string.
    IntOrString,
    /// `resource.Quantity` → JSON string.
    Quantity,
    /// `metav1.Time` → RFC 3339 seconds, or null for the zero time.
    Time,
    /// `metav1.FieldsV1` → the JSON object held in its raw bytes.
    FieldsV1,
    MapStr,
    MapBytes,
    MapQuantity,
    /// A real field whose message this decoder does not implement: decoding errors clearly.
    Unsupported,
}

/// How a singular field's presence maps to JSON; see the module doc.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    /// Emitted whenever present on the wire (Go pointer, or no `omitempty`).
    Present,
    /// Go non-pointer value with `omitempty`: the zero value is dropped.
    OmitZero,
    /// `repeated`: a JSON array (maps use `Present`; their entries merge into one object).
    Repeated,
}

struct Field {
    number: u32,
    name: &'static str,
    ty: Ty,
    card: Card,
}

struct Message {
    name: &'static str,
    fields: &'static [Field],
}

/// Emitted whenever present.
const fn p(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        card: Card::Present,
    }
}
/// Dropped when zero (`""`, `0`, `false`).
const fn z(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        card: Card::OmitZero,
    }
}
/// Repeated.
const fn r(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        card: Card::Repeated,
    }
}
/// Unsupported nested message.
const fn u(number: u32, name: &'static str) -> Field {
    Field {
        number,
        name,
        ty: Ty::Unsupported,
        card: Card::Present,
    }
}

/// The message tables, one field per entry; kept out of rustfmt so each reads like the
/// `generated.proto` message it mirrors.
#[rustfmt::skip]
mod schema {
use super::{Message, p, r, u, z};
use super::Ty::{
    Bool, Bytes, FieldsV1, I32, I64, Inline, IntOrString, MapBytes, MapQuantity, MapStr, Msg,
    Quantity, Str, Time,
};

macro_rules! message {
    ($static:ident, $name:literal, [$($field:expr),* $(,)?]) => {
        pub(super) static $static: Message = Message { name: $name, fields: &[$($field),*] };
    };
}

// --- runtime, intstr, resource: the special types, decoded generically then converted.

message!(RUNTIME_TYPE_META, "runtime.TypeMeta", [p(1, "apiVersion", Str), p(2, "kind", Str)]);
message!(INT_OR_STRING, "intstr.IntOrString", [p(1, "type", I64), p(2, "intVal", I32), p(3, "strVal", Str)]);
message!(QUANTITY, "resource.Quantity", [p(1, "string", Str)]);
message!(TIME, "meta.v1.Time", [p(1, "seconds", I64), p(2, "nanos", I32)]);
message!(FIELDS_V1, "meta.v1.FieldsV1", [p(1, "raw", Bytes)]);
message!(MAP_STR_ENTRY, "map<string,string> entry", [p(1, "key", Str), p(2, "value", Str)]);
message!(MAP_BYTES_ENTRY, "map<string,bytes> entry", [p(1, "key", Str), p(2, "value", Bytes)]);
message!(MAP_QUANTITY_ENTRY, "map<string,Quantity> entry", [p(1, "key", Str), p(2, "value", Quantity)]);

// --- meta.v1

message!(OBJECT_META, "meta.v1.ObjectMeta", [
    z(1, "name", Str),
    z(2, "generateName", Str),
    z(3, "namespace", Str),
    z(4, "selfLink", Str),
    z(5, "uid", Str),
    z(6, "resourceVersion", Str),
    z(7, "generation", I64),
    p(8, "creationTimestamp", Time),
    p(9, "deletionTimestamp", Time),
    p(10, "deletionGracePeriodSeconds", I64),
    p(11, "labels", MapStr),
    p(12, "annotations", MapStr),
    r(13, "ownerReferences", Msg(&OWNER_REFERENCE)),
    r(14, "finalizers", Str),
    r(17, "managedFields", Msg(&MANAGED_FIELDS_ENTRY)),
]);
message!(OWNER_REFERENCE, "meta.v1.OwnerReference", [
    p(1, "kind", Str),
    p(3, "name", Str),
    p(4, "uid", Str),
    p(5, "apiVersion", Str),
    p(6, "controller", Bool),
    p(7, "blockOwnerDeletion", Bool),
]);
message!(MANAGED_FIELDS_ENTRY, "meta.v1.ManagedFieldsEntry", [
    z(1, "manager", Str),
    z(2, "operation", Str),
    z(3, "apiVersion", Str),
    p(4, "time", Time),
    z(6, "fieldsType", Str),
    p(7, "fieldsV1", FieldsV1),
    z(8, "subresource", Str),
]);
message!(LABEL_SELECTOR, "meta.v1.LabelSelector", [
    p(1, "matchLabels", MapStr),
    r(2, "matchExpressions", Msg(&LABEL_SELECTOR_REQUIREMENT)),
]);
message!(LABEL_SELECTOR_REQUIREMENT, "meta.v1.LabelSelectorRequirement", [
    p(1, "key", Str),
    p(2, "operator", Str),
    r(3, "values", Str),
]);
// meta.v1.TypeMeta is inlined (not a field) in every Go object, so no object refers to it;
// it is listed for completeness and decodable through `decode_message`.
message!(META_TYPE_META, "meta.v1.TypeMeta", [z(1, "kind", Str), z(2, "apiVersion", Str)]);
message!(CONDITION, "meta.v1.Condition", [
    p(1, "type", Str),
    p(2, "status", Str),
    z(3, "observedGeneration", I64),
    p(4, "lastTransitionTime", Time),
    p(5, "reason", Str),
    p(6, "message", Str),
]);

// --- core.v1: Namespace, Service, ConfigMap, Secret, ServiceAccount

message!(NAMESPACE, "core.v1.Namespace", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&NAMESPACE_SPEC)),
    p(3, "status", Msg(&NAMESPACE_STATUS)),
]);
message!(NAMESPACE_SPEC, "core.v1.NamespaceSpec", [r(1, "finalizers", Str)]);
message!(NAMESPACE_STATUS, "core.v1.NamespaceStatus", [
    z(1, "phase", Str),
    r(2, "conditions", Msg(&NAMESPACE_CONDITION)),
]);
message!(NAMESPACE_CONDITION, "core.v1.NamespaceCondition", [
    p(1, "type", Str),
    p(2, "status", Str),
    p(4, "lastTransitionTime", Time),
    z(5, "reason", Str),
    z(6, "message", Str),
]);
message!(SERVICE, "core.v1.Service", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&SERVICE_SPEC)),
    p(3, "status", Msg(&SERVICE_STATUS)),
]);
message!(SERVICE_SPEC, "core.v1.ServiceSpec", [
    r(1, "ports", Msg(&SERVICE_PORT)),
    p(2, "selector", MapStr),
    z(3, "clusterIP", Str),
    z(4, "type", Str),
    r(5, "externalIPs", Str),
    z(7, "sessionAffinity", Str),
    z(8, "loadBalancerIP", Str),
    r(9, "loadBalancerSourceRanges", Str),
    z(10, "externalName", Str),
    z(11, "externalTrafficPolicy", Str),
    z(12, "healthCheckNodePort", I32),
    z(13, "publishNotReadyAddresses", Bool),
    p(14, "sessionAffinityConfig", Msg(&SESSION_AFFINITY_CONFIG)),
    p(17, "ipFamilyPolicy", Str),
    r(18, "clusterIPs", Str),
    r(19, "ipFamilies", Str),
    p(20, "allocateLoadBalancerNodePorts", Bool),
    p(21, "loadBalancerClass", Str),
    p(22, "internalTrafficPolicy", Str),
    p(23, "trafficDistribution", Str),
]);
message!(SERVICE_PORT, "core.v1.ServicePort", [
    z(1, "name", Str),
    z(2, "protocol", Str),
    p(3, "port", I32),
    p(4, "targetPort", IntOrString),
    z(5, "nodePort", I32),
    p(6, "appProtocol", Str),
]);
message!(SERVICE_STATUS, "core.v1.ServiceStatus", [
    p(1, "loadBalancer", Msg(&LOAD_BALANCER_STATUS)),
    r(2, "conditions", Msg(&CONDITION)),
]);
message!(LOAD_BALANCER_STATUS, "core.v1.LoadBalancerStatus", [
    r(1, "ingress", Msg(&LOAD_BALANCER_INGRESS)),
]);
message!(LOAD_BALANCER_INGRESS, "core.v1.LoadBalancerIngress", [
    z(1, "ip", Str),
    z(2, "hostname", Str),
    p(3, "ipMode", Str),
    r(4, "ports", Msg(&PORT_STATUS)),
]);
message!(PORT_STATUS, "core.v1.PortStatus", [
    p(1, "port", I32),
    p(2, "protocol", Str),
    p(3, "error", Str),
]);
message!(SESSION_AFFINITY_CONFIG, "core.v1.SessionAffinityConfig", [
    p(1, "clientIP", Msg(&CLIENT_IP_CONFIG)),
]);
message!(CLIENT_IP_CONFIG, "core.v1.ClientIPConfig", [p(1, "timeoutSeconds", I32)]);
message!(CONFIG_MAP, "core.v1.ConfigMap", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "data", MapStr),
    p(3, "binaryData", MapBytes),
    p(4, "immutable", Bool),
]);
message!(SECRET, "core.v1.Secret", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "data", MapBytes),
    z(3, "type", Str),
    p(4, "stringData", MapStr),
    p(5, "immutable", Bool),
]);
message!(SERVICE_ACCOUNT, "core.v1.ServiceAccount", [
    p(1, "metadata", Msg(&OBJECT_META)),
    r(2, "secrets", Msg(&OBJECT_REFERENCE)),
    r(3, "imagePullSecrets", Msg(&LOCAL_OBJECT_REFERENCE)),
    p(4, "automountServiceAccountToken", Bool),
]);
message!(TOKEN_REQUEST, "authentication.v1.TokenRequest", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&TOKEN_REQUEST_SPEC)),
    p(3, "status", Msg(&TOKEN_REQUEST_STATUS)),
]);
message!(TOKEN_REQUEST_SPEC, "authentication.v1.TokenRequestSpec", [
    r(1, "audiences", Str),
    p(3, "boundObjectRef", Msg(&BOUND_OBJECT_REFERENCE)),
    p(4, "expirationSeconds", I64),
]);
message!(BOUND_OBJECT_REFERENCE, "authentication.v1.BoundObjectReference", [
    z(1, "kind", Str),
    z(2, "apiVersion", Str),
    z(3, "name", Str),
    z(4, "uid", Str),
]);
message!(TOKEN_REQUEST_STATUS, "authentication.v1.TokenRequestStatus", [
    p(1, "token", Str),
    p(2, "expirationTimestamp", Time),
]);
message!(OBJECT_REFERENCE, "core.v1.ObjectReference", [
    z(1, "kind", Str),
    z(2, "namespace", Str),
    z(3, "name", Str),
    z(4, "uid", Str),
    z(5, "apiVersion", Str),
    z(6, "resourceVersion", Str),
    z(7, "fieldPath", Str),
]);
message!(LOCAL_OBJECT_REFERENCE, "core.v1.LocalObjectReference", [z(1, "name", Str)]);
message!(TYPED_LOCAL_OBJECT_REFERENCE, "core.v1.TypedLocalObjectReference", [
    p(1, "apiGroup", Str),
    p(2, "kind", Str),
    p(3, "name", Str),
]);

// --- core.v1: Pod

message!(POD, "core.v1.Pod", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&POD_SPEC)),
    p(3, "status", Msg(&POD_STATUS)),
]);
message!(POD_TEMPLATE_SPEC, "core.v1.PodTemplateSpec", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&POD_SPEC)),
]);
message!(POD_SPEC, "core.v1.PodSpec", [
    r(1, "volumes", Msg(&VOLUME)),
    r(2, "containers", Msg(&CONTAINER)),
    z(3, "restartPolicy", Str),
    p(4, "terminationGracePeriodSeconds", I64),
    p(5, "activeDeadlineSeconds", I64),
    z(6, "dnsPolicy", Str),
    p(7, "nodeSelector", MapStr),
    z(8, "serviceAccountName", Str),
    z(9, "serviceAccount", Str),
    z(10, "nodeName", Str),
    z(11, "hostNetwork", Bool),
    z(12, "hostPID", Bool),
    z(13, "hostIPC", Bool),
    p(14, "securityContext", Msg(&POD_SECURITY_CONTEXT)),
    r(15, "imagePullSecrets", Msg(&LOCAL_OBJECT_REFERENCE)),
    z(16, "hostname", Str),
    z(17, "subdomain", Str),
    u(18, "affinity"),
    z(19, "schedulerName", Str),
    r(20, "initContainers", Msg(&CONTAINER)),
    p(21, "automountServiceAccountToken", Bool),
    r(22, "tolerations", Msg(&TOLERATION)),
    r(23, "hostAliases", Msg(&HOST_ALIAS)),
    z(24, "priorityClassName", Str),
    p(25, "priority", I32),
    p(26, "dnsConfig", Msg(&POD_DNS_CONFIG)),
    p(27, "shareProcessNamespace", Bool),
    r(28, "readinessGates", Msg(&POD_READINESS_GATE)),
    p(29, "runtimeClassName", Str),
    p(30, "enableServiceLinks", Bool),
    p(31, "preemptionPolicy", Str),
    p(32, "overhead", MapQuantity),
    u(33, "topologySpreadConstraints"),
    u(34, "ephemeralContainers"),
    p(35, "setHostnameAsFQDN", Bool),
    p(36, "os", Msg(&POD_OS)),
    p(37, "hostUsers", Bool),
    r(38, "schedulingGates", Msg(&POD_SCHEDULING_GATE)),
    u(39, "resourceClaims"),
    p(40, "resources", Msg(&RESOURCE_REQUIREMENTS)),
    p(41, "hostnameOverride", Str),
    u(42, "workloadRef"),
]);
message!(POD_STATUS, "core.v1.PodStatus", [
    z(1, "phase", Str),
    r(2, "conditions", Msg(&POD_CONDITION)),
    z(3, "message", Str),
    z(4, "reason", Str),
    z(5, "hostIP", Str),
    z(6, "podIP", Str),
    p(7, "startTime", Time),
    u(8, "containerStatuses"),
    z(9, "qosClass", Str),
    u(10, "initContainerStatuses"),
    z(11, "nominatedNodeName", Str),
    r(12, "podIPs", Msg(&POD_IP)),
    u(13, "ephemeralContainerStatuses"),
    z(14, "resize", Str),
    u(15, "resourceClaimStatuses"),
    r(16, "hostIPs", Msg(&HOST_IP)),
    z(17, "observedGeneration", I64),
    u(18, "extendedResourceClaimStatus"),
    p(19, "allocatedResources", MapQuantity),
    u(20, "resources"),
]);
message!(POD_CONDITION, "core.v1.PodCondition", [
    p(1, "type", Str),
    p(2, "status", Str),
    p(3, "lastProbeTime", Time),
    p(4, "lastTransitionTime", Time),
    z(5, "reason", Str),
    z(6, "message", Str),
    z(7, "observedGeneration", I64),
]);
message!(POD_IP, "core.v1.PodIP", [p(1, "ip", Str)]);
message!(HOST_IP, "core.v1.HostIP", [p(1, "ip", Str)]);
message!(POD_OS, "core.v1.PodOS", [p(1, "name", Str)]);
message!(POD_SCHEDULING_GATE, "core.v1.PodSchedulingGate", [p(1, "name", Str)]);
message!(POD_READINESS_GATE, "core.v1.PodReadinessGate", [p(1, "conditionType", Str)]);
message!(HOST_ALIAS, "core.v1.HostAlias", [p(1, "ip", Str), r(2, "hostnames", Str)]);
message!(POD_DNS_CONFIG, "core.v1.PodDNSConfig", [
    r(1, "nameservers", Str),
    r(2, "searches", Str),
    r(3, "options", Msg(&POD_DNS_CONFIG_OPTION)),
]);
message!(POD_DNS_CONFIG_OPTION, "core.v1.PodDNSConfigOption", [z(1, "name", Str), p(2, "value", Str)]);
message!(TOLERATION, "core.v1.Toleration", [
    z(1, "key", Str),
    z(2, "operator", Str),
    z(3, "value", Str),
    z(4, "effect", Str),
    p(5, "tolerationSeconds", I64),
]);
message!(POD_SECURITY_CONTEXT, "core.v1.PodSecurityContext", [
    p(1, "seLinuxOptions", Msg(&SE_LINUX_OPTIONS)),
    p(2, "runAsUser", I64),
    p(3, "runAsNonRoot", Bool),
    r(4, "supplementalGroups", I64),
    p(5, "fsGroup", I64),
    p(6, "runAsGroup", I64),
    r(7, "sysctls", Msg(&SYSCTL)),
    p(8, "windowsOptions", Msg(&WINDOWS_SECURITY_CONTEXT_OPTIONS)),
    p(9, "fsGroupChangePolicy", Str),
    p(10, "seccompProfile", Msg(&SECCOMP_PROFILE)),
    p(11, "appArmorProfile", Msg(&APP_ARMOR_PROFILE)),
    p(12, "supplementalGroupsPolicy", Str),
    p(13, "seLinuxChangePolicy", Str),
]);
message!(SECURITY_CONTEXT, "core.v1.SecurityContext", [
    p(1, "capabilities", Msg(&CAPABILITIES)),
    p(2, "privileged", Bool),
    p(3, "seLinuxOptions", Msg(&SE_LINUX_OPTIONS)),
    p(4, "runAsUser", I64),
    p(5, "runAsNonRoot", Bool),
    p(6, "readOnlyRootFilesystem", Bool),
    p(7, "allowPrivilegeEscalation", Bool),
    p(8, "runAsGroup", I64),
    p(9, "procMount", Str),
    p(10, "windowsOptions", Msg(&WINDOWS_SECURITY_CONTEXT_OPTIONS)),
    p(11, "seccompProfile", Msg(&SECCOMP_PROFILE)),
    p(12, "appArmorProfile", Msg(&APP_ARMOR_PROFILE)),
]);
message!(CAPABILITIES, "core.v1.Capabilities", [r(1, "add", Str), r(2, "drop", Str)]);
message!(SE_LINUX_OPTIONS, "core.v1.SELinuxOptions", [
    z(1, "user", Str),
    z(2, "role", Str),
    z(3, "type", Str),
    z(4, "level", Str),
]);
message!(WINDOWS_SECURITY_CONTEXT_OPTIONS, "core.v1.WindowsSecurityContextOptions", [
    p(1, "gmsaCredentialSpecName", Str),
    p(2, "gmsaCredentialSpec", Str),
    p(3, "runAsUserName", Str),
    p(4, "hostProcess", Bool),
]);
message!(SECCOMP_PROFILE, "core.v1.SeccompProfile", [p(1, "type", Str), p(2, "localhostProfile", Str)]);
message!(APP_ARMOR_PROFILE, "core.v1.AppArmorProfile", [p(1, "type", Str), p(2, "localhostProfile", Str)]);
message!(SYSCTL, "core.v1.Sysctl", [p(1, "name", Str), p(2, "value", Str)]);

// --- core.v1: Container and what hangs off it

message!(CONTAINER, "core.v1.Container", [
    p(1, "name", Str),
    z(2, "image", Str),
    r(3, "command", Str),
    r(4, "args", Str),
    z(5, "workingDir", Str),
    r(6, "ports", Msg(&CONTAINER_PORT)),
    r(7, "env", Msg(&ENV_VAR)),
    p(8, "resources", Msg(&RESOURCE_REQUIREMENTS)),
    r(9, "volumeMounts", Msg(&VOLUME_MOUNT)),
    p(10, "livenessProbe", Msg(&PROBE)),
    p(11, "readinessProbe", Msg(&PROBE)),
    p(12, "lifecycle", Msg(&LIFECYCLE)),
    z(13, "terminationMessagePath", Str),
    z(14, "imagePullPolicy", Str),
    p(15, "securityContext", Msg(&SECURITY_CONTEXT)),
    z(16, "stdin", Bool),
    z(17, "stdinOnce", Bool),
    z(18, "tty", Bool),
    r(19, "envFrom", Msg(&ENV_FROM_SOURCE)),
    z(20, "terminationMessagePolicy", Str),
    r(21, "volumeDevices", Msg(&VOLUME_DEVICE)),
    p(22, "startupProbe", Msg(&PROBE)),
    r(23, "resizePolicy", Msg(&CONTAINER_RESIZE_POLICY)),
    p(24, "restartPolicy", Str),
    r(25, "restartPolicyRules", Msg(&CONTAINER_RESTART_RULE)),
]);
message!(CONTAINER_PORT, "core.v1.ContainerPort", [
    z(1, "name", Str),
    z(2, "hostPort", I32),
    p(3, "containerPort", I32),
    z(4, "protocol", Str),
    z(5, "hostIP", Str),
]);
message!(CONTAINER_RESIZE_POLICY, "core.v1.ContainerResizePolicy", [
    p(1, "resourceName", Str),
    p(2, "restartPolicy", Str),
]);
message!(CONTAINER_RESTART_RULE, "core.v1.ContainerRestartRule", [
    p(1, "action", Str),
    p(2, "exitCodes", Msg(&CONTAINER_RESTART_RULE_ON_EXIT_CODES)),
]);
message!(CONTAINER_RESTART_RULE_ON_EXIT_CODES, "core.v1.ContainerRestartRuleOnExitCodes", [
    p(1, "operator", Str),
    r(2, "values", I32),
]);
message!(VOLUME_DEVICE, "core.v1.VolumeDevice", [p(1, "name", Str), p(2, "devicePath", Str)]);
message!(ENV_VAR, "core.v1.EnvVar", [
    p(1, "name", Str),
    z(2, "value", Str),
    p(3, "valueFrom", Msg(&ENV_VAR_SOURCE)),
]);
message!(ENV_VAR_SOURCE, "core.v1.EnvVarSource", [
    p(1, "fieldRef", Msg(&OBJECT_FIELD_SELECTOR)),
    p(2, "resourceFieldRef", Msg(&RESOURCE_FIELD_SELECTOR)),
    p(3, "configMapKeyRef", Msg(&CONFIG_MAP_KEY_SELECTOR)),
    p(4, "secretKeyRef", Msg(&SECRET_KEY_SELECTOR)),
    p(5, "fileKeyRef", Msg(&FILE_KEY_SELECTOR)),
]);
message!(ENV_FROM_SOURCE, "core.v1.EnvFromSource", [
    z(1, "prefix", Str),
    p(2, "configMapRef", Msg(&CONFIG_MAP_ENV_SOURCE)),
    p(3, "secretRef", Msg(&SECRET_ENV_SOURCE)),
]);
message!(CONFIG_MAP_ENV_SOURCE, "core.v1.ConfigMapEnvSource", [
    p(1, "localObjectReference", Inline(&LOCAL_OBJECT_REFERENCE)),
    p(2, "optional", Bool),
]);
message!(SECRET_ENV_SOURCE, "core.v1.SecretEnvSource", [
    p(1, "localObjectReference", Inline(&LOCAL_OBJECT_REFERENCE)),
    p(2, "optional", Bool),
]);
message!(CONFIG_MAP_KEY_SELECTOR, "core.v1.ConfigMapKeySelector", [
    p(1, "localObjectReference", Inline(&LOCAL_OBJECT_REFERENCE)),
    p(2, "key", Str),
    p(3, "optional", Bool),
]);
message!(SECRET_KEY_SELECTOR, "core.v1.SecretKeySelector", [
    p(1, "localObjectReference", Inline(&LOCAL_OBJECT_REFERENCE)),
    p(2, "key", Str),
    p(3, "optional", Bool),
]);
message!(FILE_KEY_SELECTOR, "core.v1.FileKeySelector", [
    p(1, "volumeName", Str),
    p(2, "path", Str),
    p(3, "key", Str),
    p(4, "optional", Bool),
]);
message!(OBJECT_FIELD_SELECTOR, "core.v1.ObjectFieldSelector", [
    z(1, "apiVersion", Str),
    p(2, "fieldPath", Str),
]);
message!(RESOURCE_FIELD_SELECTOR, "core.v1.ResourceFieldSelector", [
    z(1, "containerName", Str),
    p(2, "resource", Str),
    p(3, "divisor", Quantity),
]);
message!(RESOURCE_REQUIREMENTS, "core.v1.ResourceRequirements", [
    p(1, "limits", MapQuantity),
    p(2, "requests", MapQuantity),
    r(3, "claims", Msg(&RESOURCE_CLAIM)),
]);
message!(RESOURCE_CLAIM, "core.v1.ResourceClaim", [p(1, "name", Str), z(2, "request", Str)]);
message!(VOLUME_MOUNT, "core.v1.VolumeMount", [
    p(1, "name", Str),
    z(2, "readOnly", Bool),
    p(3, "mountPath", Str),
    z(4, "subPath", Str),
    p(5, "mountPropagation", Str),
    z(6, "subPathExpr", Str),
    p(7, "recursiveReadOnly", Str),
]);
message!(PROBE, "core.v1.Probe", [
    p(1, "handler", Inline(&PROBE_HANDLER)),
    z(2, "initialDelaySeconds", I32),
    z(3, "timeoutSeconds", I32),
    z(4, "periodSeconds", I32),
    z(5, "successThreshold", I32),
    z(6, "failureThreshold", I32),
    p(7, "terminationGracePeriodSeconds", I64),
]);
message!(PROBE_HANDLER, "core.v1.ProbeHandler", [
    p(1, "exec", Msg(&EXEC_ACTION)),
    p(2, "httpGet", Msg(&HTTP_GET_ACTION)),
    p(3, "tcpSocket", Msg(&TCP_SOCKET_ACTION)),
    p(4, "grpc", Msg(&GRPC_ACTION)),
]);
message!(LIFECYCLE, "core.v1.Lifecycle", [
    p(1, "postStart", Msg(&LIFECYCLE_HANDLER)),
    p(2, "preStop", Msg(&LIFECYCLE_HANDLER)),
    p(3, "stopSignal", Str),
]);
message!(LIFECYCLE_HANDLER, "core.v1.LifecycleHandler", [
    p(1, "exec", Msg(&EXEC_ACTION)),
    p(2, "httpGet", Msg(&HTTP_GET_ACTION)),
    p(3, "tcpSocket", Msg(&TCP_SOCKET_ACTION)),
    p(4, "sleep", Msg(&SLEEP_ACTION)),
]);
message!(SLEEP_ACTION, "core.v1.SleepAction", [p(1, "seconds", I64)]);
message!(EXEC_ACTION, "core.v1.ExecAction", [r(1, "command", Str)]);
message!(HTTP_GET_ACTION, "core.v1.HTTPGetAction", [
    z(1, "path", Str),
    p(2, "port", IntOrString),
    z(3, "host", Str),
    z(4, "scheme", Str),
    r(5, "httpHeaders", Msg(&HTTP_HEADER)),
]);
message!(HTTP_HEADER, "core.v1.HTTPHeader", [p(1, "name", Str), p(2, "value", Str)]);
message!(TCP_SOCKET_ACTION, "core.v1.TCPSocketAction", [p(1, "port", IntOrString), z(2, "host", Str)]);
message!(GRPC_ACTION, "core.v1.GRPCAction", [p(1, "port", I32), p(2, "service", Str)]);

// --- core.v1: volumes

message!(VOLUME, "core.v1.Volume", [
    p(1, "name", Str),
    p(2, "volumeSource", Inline(&VOLUME_SOURCE)),
]);
message!(VOLUME_SOURCE, "core.v1.VolumeSource", [
    p(1, "hostPath", Msg(&HOST_PATH_VOLUME_SOURCE)),
    p(2, "emptyDir", Msg(&EMPTY_DIR_VOLUME_SOURCE)),
    u(3, "gcePersistentDisk"),
    u(4, "awsElasticBlockStore"),
    u(5, "gitRepo"),
    p(6, "secret", Msg(&SECRET_VOLUME_SOURCE)),
    u(7, "nfs"),
    u(8, "iscsi"),
    u(9, "glusterfs"),
    p(10, "persistentVolumeClaim", Msg(&PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE)),
    u(11, "rbd"),
    u(12, "flexVolume"),
    u(13, "cinder"),
    u(14, "cephfs"),
    u(15, "flocker"),
    u(16, "downwardAPI"),
    u(17, "fc"),
    u(18, "azureFile"),
    p(19, "configMap", Msg(&CONFIG_MAP_VOLUME_SOURCE)),
    u(20, "vsphereVolume"),
    u(21, "quobyte"),
    u(22, "azureDisk"),
    u(23, "photonPersistentDisk"),
    u(24, "portworxVolume"),
    u(25, "scaleIO"),
    u(26, "projected"),
    u(27, "storageos"),
    u(28, "csi"),
    u(29, "ephemeral"),
    u(30, "image"),
]);
message!(HOST_PATH_VOLUME_SOURCE, "core.v1.HostPathVolumeSource", [p(1, "path", Str), p(2, "type", Str)]);
message!(EMPTY_DIR_VOLUME_SOURCE, "core.v1.EmptyDirVolumeSource", [
    z(1, "medium", Str),
    p(2, "sizeLimit", Quantity),
]);
message!(SECRET_VOLUME_SOURCE, "core.v1.SecretVolumeSource", [
    z(1, "secretName", Str),
    r(2, "items", Msg(&KEY_TO_PATH)),
    p(3, "defaultMode", I32),
    p(4, "optional", Bool),
]);
message!(CONFIG_MAP_VOLUME_SOURCE, "core.v1.ConfigMapVolumeSource", [
    p(1, "localObjectReference", Inline(&LOCAL_OBJECT_REFERENCE)),
    r(2, "items", Msg(&KEY_TO_PATH)),
    p(3, "defaultMode", I32),
    p(4, "optional", Bool),
]);
message!(KEY_TO_PATH, "core.v1.KeyToPath", [p(1, "key", Str), p(2, "path", Str), p(3, "mode", I32)]);
message!(PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE, "core.v1.PersistentVolumeClaimVolumeSource", [
    p(1, "claimName", Str),
    z(2, "readOnly", Bool),
]);

// --- apps.v1

message!(DEPLOYMENT, "apps.v1.Deployment", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&DEPLOYMENT_SPEC)),
    p(3, "status", Msg(&DEPLOYMENT_STATUS)),
]);
message!(DEPLOYMENT_SPEC, "apps.v1.DeploymentSpec", [
    p(1, "replicas", I32),
    p(2, "selector", Msg(&LABEL_SELECTOR)),
    p(3, "template", Msg(&POD_TEMPLATE_SPEC)),
    p(4, "strategy", Msg(&DEPLOYMENT_STRATEGY)),
    z(5, "minReadySeconds", I32),
    p(6, "revisionHistoryLimit", I32),
    z(7, "paused", Bool),
    p(9, "progressDeadlineSeconds", I32),
]);
message!(DEPLOYMENT_STRATEGY, "apps.v1.DeploymentStrategy", [
    z(1, "type", Str),
    p(2, "rollingUpdate", Msg(&ROLLING_UPDATE_DEPLOYMENT)),
]);
message!(ROLLING_UPDATE_DEPLOYMENT, "apps.v1.RollingUpdateDeployment", [
    p(1, "maxUnavailable", IntOrString),
    p(2, "maxSurge", IntOrString),
]);
message!(DEPLOYMENT_STATUS, "apps.v1.DeploymentStatus", [
    z(1, "observedGeneration", I64),
    z(2, "replicas", I32),
    z(3, "updatedReplicas", I32),
    z(4, "availableReplicas", I32),
    z(5, "unavailableReplicas", I32),
    r(6, "conditions", Msg(&DEPLOYMENT_CONDITION)),
    z(7, "readyReplicas", I32),
    p(8, "collisionCount", I32),
    p(9, "terminatingReplicas", I32),
]);
message!(DEPLOYMENT_CONDITION, "apps.v1.DeploymentCondition", [
    p(1, "type", Str),
    p(2, "status", Str),
    z(4, "reason", Str),
    z(5, "message", Str),
    p(6, "lastUpdateTime", Time),
    p(7, "lastTransitionTime", Time),
]);
message!(REPLICA_SET, "apps.v1.ReplicaSet", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&REPLICA_SET_SPEC)),
    p(3, "status", Msg(&REPLICA_SET_STATUS)),
]);
message!(REPLICA_SET_SPEC, "apps.v1.ReplicaSetSpec", [
    p(1, "replicas", I32),
    p(2, "selector", Msg(&LABEL_SELECTOR)),
    p(3, "template", Msg(&POD_TEMPLATE_SPEC)),
    z(4, "minReadySeconds", I32),
]);
message!(REPLICA_SET_STATUS, "apps.v1.ReplicaSetStatus", [
    p(1, "replicas", I32),
    z(2, "fullyLabeledReplicas", I32),
    z(3, "observedGeneration", I64),
    z(4, "readyReplicas", I32),
    z(5, "availableReplicas", I32),
    r(6, "conditions", Msg(&REPLICA_SET_CONDITION)),
    p(7, "terminatingReplicas", I32),
]);
message!(REPLICA_SET_CONDITION, "apps.v1.ReplicaSetCondition", [
    p(1, "type", Str),
    p(2, "status", Str),
    p(3, "lastTransitionTime", Time),
    z(4, "reason", Str),
    z(5, "message", Str),
]);

// --- networking.v1

message!(INGRESS, "networking.v1.Ingress", [
    p(1, "metadata", Msg(&OBJECT_META)),
    p(2, "spec", Msg(&INGRESS_SPEC)),
    p(3, "status", Msg(&INGRESS_STATUS)),
]);
message!(INGRESS_SPEC, "networking.v1.IngressSpec", [
    p(1, "defaultBackend", Msg(&INGRESS_BACKEND)),
    r(2, "tls", Msg(&INGRESS_TLS)),
    r(3, "rules", Msg(&INGRESS_RULE)),
    p(4, "ingressClassName", Str),
]);
message!(INGRESS_BACKEND, "networking.v1.IngressBackend", [
    p(3, "resource", Msg(&TYPED_LOCAL_OBJECT_REFERENCE)),
    p(4, "service", Msg(&INGRESS_SERVICE_BACKEND)),
]);
message!(INGRESS_SERVICE_BACKEND, "networking.v1.IngressServiceBackend", [
    p(1, "name", Str),
    p(2, "port", Msg(&SERVICE_BACKEND_PORT)),
]);
message!(SERVICE_BACKEND_PORT, "networking.v1.ServiceBackendPort", [
    z(1, "name", Str),
    z(2, "number", I32),
]);
message!(INGRESS_RULE, "networking.v1.IngressRule", [
    z(1, "host", Str),
    p(2, "ingressRuleValue", Inline(&INGRESS_RULE_VALUE)),
]);
message!(INGRESS_RULE_VALUE, "networking.v1.IngressRuleValue", [
    p(1, "http", Msg(&HTTP_INGRESS_RULE_VALUE)),
]);
message!(HTTP_INGRESS_RULE_VALUE, "networking.v1.HTTPIngressRuleValue", [
    r(1, "paths", Msg(&HTTP_INGRESS_PATH)),
]);
message!(HTTP_INGRESS_PATH, "networking.v1.HTTPIngressPath", [
    z(1, "path", Str),
    p(2, "backend", Msg(&INGRESS_BACKEND)),
    p(3, "pathType", Str),
]);
message!(INGRESS_TLS, "networking.v1.IngressTLS", [r(1, "hosts", Str), z(2, "secretName", Str)]);
message!(INGRESS_STATUS, "networking.v1.IngressStatus", [
    p(1, "loadBalancer", Msg(&INGRESS_LOAD_BALANCER_STATUS)),
]);
message!(INGRESS_LOAD_BALANCER_STATUS, "networking.v1.IngressLoadBalancerStatus", [
    r(1, "ingress", Msg(&INGRESS_LOAD_BALANCER_INGRESS)),
]);
message!(INGRESS_LOAD_BALANCER_INGRESS, "networking.v1.IngressLoadBalancerIngress", [
    z(1, "ip", Str),
    z(2, "hostname", Str),
    r(4, "ports", Msg(&INGRESS_PORT_STATUS)),
]);
message!(INGRESS_PORT_STATUS, "networking.v1.IngressPortStatus", [
    p(1, "port", I32),
    p(2, "protocol", Str),
    p(3, "error", Str),
]);
}
use schema::*;

// ---------------------------------------------------------------------------------------------
// Decoding.

use Ty::{
    Bool, Bytes, FieldsV1, I32, I64, Inline, IntOrString, MapBytes, MapQuantity, MapStr, Msg,
    Quantity, Str, Time,
};

/// Decodes the fields of one message into `out`, which may already hold fields: protobuf
/// merges repeated occurrences of a singular message field, and inlined Go structs share
/// their parent's JSON object.
fn decode_fields(
    buf: &[u8],
    msg: &'static Message,
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep);
    }
    let mut r = Reader::new(buf);
    while !r.done() {
        let (number, wire_type) = r.key()?;
        let field =
            msg.fields
                .iter()
                .find(|f| f.number == number)
                .ok_or(ProtoError::UnknownField {
                    message: msg.name,
                    number,
                })?;
        decode_field(&mut r, wire_type, field, msg, depth, out)?;
    }
    Ok(())
}

fn decode_field(
    r: &mut Reader<'_>,
    wire_type: u8,
    field: &'static Field,
    msg: &'static Message,
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<()> {
    let wrong = || ProtoError::WrongWireType {
        message: msg.name,
        field: field.name,
        wire_type,
    };
    let bad = |reason: String| ProtoError::BadValue {
        message: msg.name,
        field: field.name,
        reason,
    };
    let name = field.name;
    match field.ty {
        Ty::Unsupported => Err(ProtoError::UnsupportedField {
            message: msg.name,
            field: name,
        }),
        Bool | I32 | I64 => {
            if wire_type == VARINT {
                let value = scalar(field.ty, r.varint()?);
                put(out, field, value);
            } else if wire_type == LEN && field.card == Card::Repeated {
                // Packed encoding: one length-delimited run of varints.
                let mut packed = Reader::new(r.len_delimited()?);
                while !packed.done() {
                    let value = scalar(field.ty, packed.varint()?);
                    put(out, field, value);
                }
            } else {
                return Err(wrong());
            }
            Ok(())
        }
        ty => {
            if wire_type != LEN {
                return Err(wrong());
            }
            let bytes = r.len_delimited()?;
            let value = match ty {
                Str => Value::String(utf8(bytes, msg.name, name)?),
                Bytes => Value::String(base64(bytes)),
                Msg(inner) => {
                    let mut obj = match (field.card, out.remove(name)) {
                        (Card::Repeated, previous) => {
                            if let Some(previous) = previous {
                                out.insert(name.into(), previous);
                            }
                            Map::new()
                        }
                        (_, Some(Value::Object(existing))) => existing,
                        _ => Map::new(),
                    };
                    decode_fields(bytes, inner, depth + 1, &mut obj)?;
                    Value::Object(obj)
                }
                Inline(inner) => return decode_fields(bytes, inner, depth + 1, out),
                IntOrString => {
                    let m = decode_sub(bytes, &INT_OR_STRING, depth)?;
                    match m.get("type").and_then(Value::as_i64).unwrap_or(0) {
                        0 => m.get("intVal").cloned().unwrap_or(Value::from(0)),
                        1 => m.get("strVal").cloned().unwrap_or(Value::from("")),
                        other => {
                            return Err(bad(format!(
                                "IntOrString type {other} is neither 0 (int) nor 1 (string)"
                            )));
                        }
                    }
                }
                Quantity => quantity(bytes, depth)?,
                Time => {
                    // Go decodes empty bytes as the zero time, which its JSON encoder writes as
                    // null; otherwise only seconds count (metav1.Time drops nanos on decode).
                    if bytes.is_empty() {
                        Value::Null
                    } else {
                        let m = decode_sub(bytes, &TIME, depth)?;
                        let seconds = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                        Value::String(rfc3339(seconds).map_err(bad)?)
                    }
                }
                FieldsV1 => {
                    let m = decode_sub(bytes, &FIELDS_V1, depth)?;
                    // Decoded generically the raw bytes became base64; re-read them directly.
                    match m.get("raw") {
                        None => Value::Null,
                        Some(_) => fields_v1_raw(bytes)
                            .and_then(|raw| serde_json::from_slice(raw).map_err(|e| e.to_string()))
                            .map_err(bad)?,
                    }
                }
                MapStr | MapBytes | MapQuantity => {
                    let entry = match ty {
                        MapStr => &MAP_STR_ENTRY,
                        MapBytes => &MAP_BYTES_ENTRY,
                        _ => &MAP_QUANTITY_ENTRY,
                    };
                    let mut m = decode_sub(bytes, entry, depth)?;
                    let key = match m.remove("key") {
                        Some(Value::String(k)) => k,
                        _ => String::new(),
                    };
                    // An absent value is the Go zero value of the map's value type.
                    let value = m.remove("value").unwrap_or_else(|| match ty {
                        MapQuantity => Value::from("0"),
                        _ => Value::from(""),
                    });
                    match out.entry(name).or_insert_with(|| Value::Object(Map::new())) {
                        Value::Object(map) => {
                            map.insert(key, value);
                        }
                        other => *other = Value::Object(Map::from_iter([(key, value)])),
                    }
                    return Ok(());
                }
                Bool | I32 | I64 | Ty::Unsupported => return Err(wrong()),
            };
            put(out, field, value);
            Ok(())
        }
    }
}

fn decode_sub(bytes: &[u8], msg: &'static Message, depth: usize) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    decode_fields(bytes, msg, depth + 1, &mut m)?;
    Ok(m)
}

fn quantity(bytes: &[u8], depth: usize) -> Result<Value> {
    let m = decode_sub(bytes, &QUANTITY, depth)?;
    // The zero Quantity prints as "0" in Go.
    Ok(match m.get("string") {
        Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
        _ => Value::from("0"),
    })
}

/// The last `raw` field of a FieldsV1 message, already known to be well-formed.
fn fields_v1_raw(bytes: &[u8]) -> std::result::Result<&[u8], String> {
    let mut r = Reader::new(bytes);
    let mut raw: &[u8] = &[];
    while !r.done() {
        r.key().map_err(|e| e.to_string())?;
        raw = r.len_delimited().map_err(|e| e.to_string())?;
    }
    Ok(raw)
}

fn scalar(ty: Ty, v: u64) -> Value {
    match ty {
        Bool => Value::Bool(v != 0),
        // Protobuf int32 is the low 32 bits of the varint (negatives are sign-extended to 64).
        I32 => Value::from(v as u32 as i32),
        _ => Value::from(v as i64),
    }
}

/// Stores one decoded value according to the field's cardinality.
fn put(out: &mut Map<String, Value>, field: &Field, value: Value) {
    match field.card {
        Card::Repeated => match out
            .entry(field.name)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![value]),
        },
        Card::OmitZero if is_zero(&value) => {
            // Last occurrence wins in protobuf, so a later zero erases an earlier value.
            out.remove(field.name);
        }
        _ => {
            out.insert(field.name.into(), value);
        }
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn utf8(bytes: &[u8], message: &'static str, field: &'static str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::InvalidUtf8 { message, field })
}

/// Go's `time.RFC3339` in UTC, as metav1.Time marshals to JSON.
fn rfc3339(seconds: i64) -> std::result::Result<String, String> {
    let ts = jiff::Timestamp::from_second(seconds)
        .map_err(|e| format!("time {seconds}s out of range: {e}"))?;
    Ok(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes one bare message (no magic, no envelope) by its schema name, e.g.
/// `meta.v1.TypeMeta`; `None` when no schema has that name. For tests and diagnostics.
pub fn decode_message(name: &str, bytes: &[u8]) -> Option<Result<Value>> {
    let msg = ALL_MESSAGES.iter().find(|m| m.name == name)?;
    Some(decode_sub(bytes, msg, 0).map(Value::Object))
}

/// Every message schema, for `decode_message` and the schema self-checks.
static ALL_MESSAGES: &[&Message] = &[
    &RUNTIME_TYPE_META,
    &TOKEN_REQUEST,
    &TOKEN_REQUEST_SPEC,
    &BOUND_OBJECT_REFERENCE,
    &TOKEN_REQUEST_STATUS,
    &INT_OR_STRING,
    &QUANTITY,
    &TIME,
    &FIELDS_V1,
    &MAP_STR_ENTRY,
    &MAP_BYTES_ENTRY,
    &MAP_QUANTITY_ENTRY,
    &OBJECT_META,
    &OWNER_REFERENCE,
    &MANAGED_FIELDS_ENTRY,
    &LABEL_SELECTOR,
    &LABEL_SELECTOR_REQUIREMENT,
    &META_TYPE_META,
    &CONDITION,
    &NAMESPACE,
    &NAMESPACE_SPEC,
    &NAMESPACE_STATUS,
    &NAMESPACE_CONDITION,
    &SERVICE,
    &SERVICE_SPEC,
    &SERVICE_PORT,
    &SERVICE_STATUS,
    &LOAD_BALANCER_STATUS,
    &LOAD_BALANCER_INGRESS,
    &PORT_STATUS,
    &SESSION_AFFINITY_CONFIG,
    &CLIENT_IP_CONFIG,
    &CONFIG_MAP,
    &SECRET,
    &SERVICE_ACCOUNT,
    &OBJECT_REFERENCE,
    &LOCAL_OBJECT_REFERENCE,
    &TYPED_LOCAL_OBJECT_REFERENCE,
    &POD,
    &POD_TEMPLATE_SPEC,
    &POD_SPEC,
    &POD_STATUS,
    &POD_CONDITION,
    &POD_IP,
    &HOST_IP,
    &POD_OS,
    &POD_SCHEDULING_GATE,
    &POD_READINESS_GATE,
    &HOST_ALIAS,
    &POD_DNS_CONFIG,
    &POD_DNS_CONFIG_OPTION,
    &TOLERATION,
    &POD_SECURITY_CONTEXT,
    &SECURITY_CONTEXT,
    &CAPABILITIES,
    &SE_LINUX_OPTIONS,
    &WINDOWS_SECURITY_CONTEXT_OPTIONS,
    &SECCOMP_PROFILE,
    &APP_ARMOR_PROFILE,
    &SYSCTL,
    &CONTAINER,
    &CONTAINER_PORT,
    &CONTAINER_RESIZE_POLICY,
    &CONTAINER_RESTART_RULE,
    &CONTAINER_RESTART_RULE_ON_EXIT_CODES,
    &VOLUME_DEVICE,
    &ENV_VAR,
    &ENV_VAR_SOURCE,
    &ENV_FROM_SOURCE,
    &CONFIG_MAP_ENV_SOURCE,
    &SECRET_ENV_SOURCE,
    &CONFIG_MAP_KEY_SELECTOR,
    &SECRET_KEY_SELECTOR,
    &FILE_KEY_SELECTOR,
    &OBJECT_FIELD_SELECTOR,
    &RESOURCE_FIELD_SELECTOR,
    &RESOURCE_REQUIREMENTS,
    &RESOURCE_CLAIM,
    &VOLUME_MOUNT,
    &PROBE,
    &PROBE_HANDLER,
    &LIFECYCLE,
    &LIFECYCLE_HANDLER,
    &SLEEP_ACTION,
    &EXEC_ACTION,
    &HTTP_GET_ACTION,
    &HTTP_HEADER,
    &TCP_SOCKET_ACTION,
    &GRPC_ACTION,
    &VOLUME,
    &VOLUME_SOURCE,
    &HOST_PATH_VOLUME_SOURCE,
    &EMPTY_DIR_VOLUME_SOURCE,
    &SECRET_VOLUME_SOURCE,
    &CONFIG_MAP_VOLUME_SOURCE,
    &KEY_TO_PATH,
    &PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE,
    &DEPLOYMENT,
    &DEPLOYMENT_SPEC,
    &DEPLOYMENT_STRATEGY,
    &ROLLING_UPDATE_DEPLOYMENT,
    &DEPLOYMENT_STATUS,
    &DEPLOYMENT_CONDITION,
    &REPLICA_SET,
    &REPLICA_SET_SPEC,
    &REPLICA_SET_STATUS,
    &REPLICA_SET_CONDITION,
    &INGRESS,
    &INGRESS_SPEC,
    &INGRESS_BACKEND,
    &INGRESS_SERVICE_BACKEND,
    &SERVICE_BACKEND_PORT,
    &INGRESS_RULE,
    &INGRESS_RULE_VALUE,
    &HTTP_INGRESS_RULE_VALUE,
    &HTTP_INGRESS_PATH,
    &INGRESS_TLS,
    &INGRESS_STATUS,
    &INGRESS_LOAD_BALANCER_STATUS,
    &INGRESS_LOAD_BALANCER_INGRESS,
    &INGRESS_PORT_STATUS,
];

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;
