//! Name, label and annotation validation with the rules and message texts of
//! k8s.io/apimachinery `util/validation` (Kubernetes 1.33), because kubectl shows those texts
//! to users verbatim and tests against real clusters compare them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{FieldError, FieldErrors};

/// Longest RFC 1123 label (`metadata.name` of namespaces, services, ...).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest RFC 1123 subdomain (`metadata.name` of most objects).
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest RFC 1035 label.
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
/// Longest name part of a qualified name (label or annotation key).
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Longest IANA service name (a named container or service port).
pub const PORT_NAME_MAX_LENGTH: usize = 15;
/// Upper bound on the summed byte length of all annotation keys and values of one object.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const INVALID_IP_ERR: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// The "too long" message upstream's `MaxLenError` produces.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// The "must be non-empty" message upstream's `EmptyError` produces.
pub fn empty_error() -> &'static str {
    "must be non-empty"
}

/// The message upstream's `RegexError` produces: the explanation, examples, and the regex
/// kube-apiserver would have used (we check by hand but must quote the same regex).
pub fn regex_error(msg: &str, regex: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{regex}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(regex);
    out.push_str("')");
    out
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
fn matches_dns1123_label(value: &str) -> bool {
    let b = value.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `^label(\.label)*$` with the RFC 1123 label above.
fn matches_dns1123_subdomain(value: &str) -> bool {
    value.split('.').all(matches_dns1123_label)
}

/// `^[a-z]([-a-z0-9]*[a-z0-9])?$`
fn matches_dns1035_label(value: &str) -> bool {
    let b = value.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_lowercase()
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`
fn matches_qualified_name_part(value: &str) -> bool {
    let b = value.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Checks an RFC 1123 DNS label (`my-name`): what namespace and service names must be.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        // A value that is a valid subdomain but not a label can only be wrong because of its
        // dots, and upstream says exactly that instead of quoting the regex.
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Checks an RFC 1123 DNS subdomain (`example.com`): what most object names must be.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Checks an RFC 1035 DNS label (starts with a letter): what service names must be.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1035_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Checks a qualified name: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters. Label keys and annotation keys have this form.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Checks a label value: empty, or up to 63 alphanumerics with `-`, `_`, `.` inside.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Checks an IANA service name (RFC 6335) as used for port names: at most 15 characters of
/// `[-a-z0-9]`, at least one letter, no leading, trailing or doubled hyphen.
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let b = port.as_bytes();
    if b.len() > PORT_NAME_MAX_LENGTH {
        errs.push(max_len_error(PORT_NAME_MAX_LENGTH));
    }
    if b.is_empty() || !b.iter().all(|&c| is_lower_alnum(c) || c == b'-') {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if !b.iter().any(u8::is_ascii_lowercase) {
        errs.push("must contain at least one letter (a-z)".to_owned());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_owned());
    }
    if b.first() == Some(&b'-') || b.last() == Some(&b'-') {
        errs.push("must not begin or end with a hyphen".to_owned());
    }
    errs
}

/// Checks an IP address the way upstream's strict `IsValidIP` does: IPv4 or IPv6, no leading
/// zeros in IPv4 octets, no IPv4-mapped IPv6, and written in canonical form.
pub fn is_valid_ip(value: &str) -> Vec<String> {
    let Some(sloppy) = parse_ip_sloppy(value) else {
        return vec![INVALID_IP_ERR.to_owned()];
    };
    let mut errs = Vec::new();
    match value.parse::<IpAddr>() {
        // Accepted only by the lenient parser: the difference is leading zeros.
        Err(_) => errs.push("must not have leading 0s".to_owned()),
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
            errs.push("must not be an IPv4-mapped IPv6 address".to_owned());
        }
        Ok(_) => {}
    }
    if !errs.is_empty() {
        return errs;
    }
    let canonical = sloppy.to_string();
    if value != canonical {
        errs.push(format!("must be in canonical form (\"{canonical}\")"));
    }
    errs
}

/// Go's historical `net.ParseIP`, which kube-apiserver still uses to tell "not an IP at all"
/// from "an IP with leading zeros": it reads IPv4 octets as decimal regardless of zeros.
fn parse_ip_sloppy(value: &str) -> Option<IpAddr> {
    let first_sep = value.bytes().find(|&b| b == b'.' || b == b':')?;
    if first_sep == b'.' {
        return parse_ipv4_sloppy(value).map(IpAddr::V4);
    }
    if let Ok(v6) = value.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    // An embedded IPv4 tail may carry leading zeros; normalise it and let std judge the rest.
    let (head, tail) = value.rsplit_once(':')?;
    if !tail.contains('.') {
        return None;
    }
    let v4 = parse_ipv4_sloppy(tail)?;
    format!("{head}:{v4}")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn parse_ipv4_sloppy(value: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = value.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = part.trim_start_matches('0');
        // Go gives up past 0xFFFFFF; any such value is over 255 anyway.
        if digits.len() > 3 {
            return None;
        }
        let n: u32 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        *octet = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Validates `metadata.labels` (or any label map, e.g. a selector's `matchLabels`): keys are
/// qualified names, values label values. Errors are reported against `path` itself, as
/// upstream's `ValidateLabels` does.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (key, value) in labels {
        errs.extend(validate_label_name(key, path));
        for msg in is_valid_label_value(value) {
            errs.push(FieldError::invalid(path, value.as_str(), msg));
        }
    }
    errs
}

/// Validates one label key against `path` (upstream `ValidateLabelName`).
pub fn validate_label_name(key: &str, path: &str) -> FieldErrors {
    is_qualified_name(key)
        .into_iter()
        .map(|msg| FieldError::invalid(path, key, msg))
        .collect()
}

/// Validates `metadata.annotations`: keys are qualified names compared case-insensitively,
/// and the keys and values together may not exceed 256 KiB.
pub fn validate_annotations(annotations: &BTreeMap<String, String>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut total: usize = 0;
    for (key, value) in annotations {
        // Upstream allows upper case in annotation keys by checking the lower-cased key.
        for msg in is_qualified_name(&key.to_lowercase()) {
            errs.push(FieldError::invalid(path, key.as_str(), msg));
        }
        total = total.saturating_add(key.len()).saturating_add(value.len());
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
        errs.push(FieldError::too_long(
            path,
            TOTAL_ANNOTATION_SIZE_LIMIT_BYTES,
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL_RE_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const SUBDOMAIN_RE_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const DNS1035_RE_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    const QNAME_RE_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_RE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    /// One table row: which checker, the input, and every message expected (empty = valid).
    fn check(f: fn(&str) -> Vec<String>, input: &str, expected: &[&str]) {
        let got = f(input);
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn regex_error_spacing_matches_upstream() {
        // Upstream writes "'x', " before " or ", giving a doubled space; kubectl shows it.
        assert_eq!(
            regex_error("m", "r", &[]),
            "m (regex used for validation is 'r')"
        );
        assert_eq!(
            regex_error("m", "r", &["a", "b"]),
            "m (e.g. 'a',  or 'b', regex used for validation is 'r')"
        );
    }

    #[test]
    fn dns1123_label() {
        let long = "a".repeat(64);
        let cases: &[(&str, &[&str])] = &[
            ("a", &[]),
            ("my-name", &[]),
            ("123-abc", &[]),
            (&long[..63], &[]),
            ("", &[LABEL_RE_MSG]),
            ("A", &[LABEL_RE_MSG]),
            ("-a", &[LABEL_RE_MSG]),
            ("a-", &[LABEL_RE_MSG]),
            ("a_b", &[LABEL_RE_MSG]),
            ("a.b", &["must not contain dots"]),
            (&long, &["must be no more than 63 characters"]),
        ];
        for (input, expected) in cases {
            check(is_dns1123_label, input, expected);
        }
    }

    #[test]
    fn dns1123_subdomain() {
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(53));
        let cases: &[(&str, &[&str])] = &[
            ("example.com", &[]),
            ("a", &[]),
            ("1.2.3", &[]),
            (&long[..253], &[]),
            ("", &[SUBDOMAIN_RE_MSG]),
            ("a..b", &[SUBDOMAIN_RE_MSG]),
            (".a", &[SUBDOMAIN_RE_MSG]),
            ("a.", &[SUBDOMAIN_RE_MSG]),
            ("a.-b", &[SUBDOMAIN_RE_MSG]),
            ("Example.com", &[SUBDOMAIN_RE_MSG]),
            (&long, &["must be no more than 253 characters"]),
        ];
        for (input, expected) in cases {
            check(is_dns1123_subdomain, input, expected);
        }
        let too_long_and_bad = format!("{long}-");
        check(
            is_dns1123_subdomain,
            &too_long_and_bad,
            &["must be no more than 253 characters", SUBDOMAIN_RE_MSG],
        );
    }

    #[test]
    fn dns1035_label() {
        let cases: &[(&str, &[&str])] = &[
            ("a", &[]),
            ("my-name", &[]),
            ("abc-123", &[]),
            ("1abc", &[DNS1035_RE_MSG]),
            ("", &[DNS1035_RE_MSG]),
            ("a.b", &[DNS1035_RE_MSG]),
        ];
        for (input, expected) in cases {
            check(is_dns1035_label, input, expected);
        }
    }

    #[test]
    fn qualified_name() {
        let name64 = "a".repeat(64);
        let prefixed_long = format!("example.com/{name64}");
        let cases: &[(&str, &[&str])] = &[
            ("simple", &[]),
            ("1234/5678", &[]),
            ("1.2.3.4/5678", &[]),
            ("Uppercase_Is_OK_123", &[]),
            ("example.com/Uppercase_Is_OK_123", &[]),
            ("app.kubernetes.io/name", &[]),
            ("", &["name part must be non-empty", QNAME_RE_MSG]),
            ("/simple", &["prefix part must be non-empty"]),
            (
                "example.com/",
                &["name part must be non-empty", QNAME_RE_MSG],
            ),
            ("-a", &[QNAME_RE_MSG]),
            ("a b", &[QNAME_RE_MSG]),
            (
                &prefixed_long,
                &["name part must be no more than 63 characters"],
            ),
            (
                "Example.com/a",
                &[
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ],
            ),
            (
                "a/b/c",
                &[
                    "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                ],
            ),
        ];
        for (input, expected) in cases {
            check(is_qualified_name, input, expected);
        }
    }

    #[test]
    fn label_value() {
        let long = "a".repeat(64);
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("MyValue", &[]),
            ("my_value", &[]),
            ("1.2-3_4", &[]),
            (&long[..63], &[]),
            ("-a", &[VALUE_RE_MSG]),
            ("a b", &[VALUE_RE_MSG]),
            ("a/b", &[VALUE_RE_MSG]),
            (&long, &["must be no more than 63 characters"]),
        ];
        for (input, expected) in cases {
            check(is_valid_label_value, input, expected);
        }
    }

    #[test]
    fn port_name() {
        const CHARSET: &str =
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)";
        const LETTER: &str = "must contain at least one letter (a-z)";
        const DOUBLE: &str = "must not contain consecutive hyphens";
        const ENDS: &str = "must not begin or end with a hyphen";
        let cases: &[(&str, &[&str])] = &[
            ("telnet", &[]),
            ("re-mail-ck", &[]),
            ("pop3", &[]),
            ("a", &[]),
            ("1-a-2-b-3", &[]),
            ("", &[CHARSET, LETTER]),
            (
                "longerthan15characters",
                &["must be no more than 15 characters"],
            ),
            ("12345", &[LETTER]),
            ("1-2-3-4", &[LETTER]),
            ("-begin", &[ENDS]),
            ("end-", &[ENDS]),
            ("two--hyphens", &[DOUBLE]),
            ("whois++", &[CHARSET]),
            ("HTTP", &[CHARSET, LETTER]),
        ];
        for (input, expected) in cases {
            check(is_valid_port_name, input, expected);
        }
    }

    #[test]
    fn ip() {
        let cases: &[(&str, &[&str])] = &[
            ("1.2.3.4", &[]),
            ("0.0.0.0", &[]),
            ("2001:db8::ffff", &[]),
            ("::", &[]),
            ("::1", &[]),
            ("", &[INVALID_IP_ERR]),
            ("1.2.3", &[INVALID_IP_ERR]),
            ("256.1.1.1", &[INVALID_IP_ERR]),
            ("1.2.3.4.5", &[INVALID_IP_ERR]),
            ("foo", &[INVALID_IP_ERR]),
            ("fe80::1%eth0", &[INVALID_IP_ERR]),
            ("1.2.3.4/24", &[INVALID_IP_ERR]),
            ("010.002.003.004", &["must not have leading 0s"]),
            ("::ffff:001.2.3.4", &["must not have leading 0s"]),
            (
                "::ffff:1.2.3.4",
                &["must not be an IPv4-mapped IPv6 address"],
            ),
            (
                "2001:DB8::1",
                &["must be in canonical form (\"2001:db8::1\")"],
            ),
            (
                "2001:db8:0:0:0:0:0:1",
                &["must be in canonical form (\"2001:db8::1\")"],
            ),
            ("::1.2.3.4", &["must be in canonical form (\"::102:304\")"]),
        ];
        for (input, expected) in cases {
            check(is_valid_ip, input, expected);
        }
    }

    #[test]
    fn labels_and_annotations() {
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "web".to_owned()),
            ("bad key".to_owned(), "-v".to_owned()),
        ]
        .into();
        let errs: Vec<String> = validate_labels(&labels, "metadata.labels")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                format!("metadata.labels: Invalid value: \"bad key\": {QNAME_RE_MSG}"),
                format!("metadata.labels: Invalid value: \"-v\": {VALUE_RE_MSG}"),
            ]
        );

        let upper: BTreeMap<String, String> =
            [("Example.com/Key".to_owned(), "anything at all".to_owned())].into();
        assert!(validate_annotations(&upper, "metadata.annotations").is_empty());

        let huge: BTreeMap<String, String> = [(
            "k".to_owned(),
            "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES),
        )]
        .into();
        let errs: Vec<String> = validate_annotations(&huge, "metadata.annotations")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            ["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );

        let at_limit: BTreeMap<String, String> = [(
            "k".to_owned(),
            "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES - 1),
        )]
        .into();
        assert!(validate_annotations(&at_limit, "metadata.annotations").is_empty());
    }
}
