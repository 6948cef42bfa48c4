//! Label selectors: the `?labelSelector=` query syntax and the `metav1.LabelSelector` object
//! form, parsed, matched and printed with the semantics and error texts of
//! k8s.io/apimachinery `pkg/labels`, so clients see what kube-apiserver would tell them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::{FieldError, FieldErrors, go_quote};
use crate::names::{is_qualified_name, is_valid_label_value, validate_label_name, validate_labels};

/// How a [`Requirement`] relates a label key to its values.
///
/// `Equals` and `DoubleEquals` match alike; they stay distinct because upstream prints each
/// the way it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`; also matches objects without the label.
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`; also matches objects without the label.
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>5` (integer comparison)
    GreaterThan,
    /// `key<5` (integer comparison)
    LessThan,
}

/// Why a selector was refused. The `Display` text is what kube-apiserver answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The query string has a token where a requirement boundary was expected.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        /// The offending token ("" at the end of the string).
        found: String,
        /// What upstream lists as acceptable there.
        expected: &'static str,
    },
    /// One requirement of the query string is malformed or invalid.
    #[error("unable to parse requirement: {0}")]
    Requirement(RequirementError),
    /// A requirement built from an object (or by [`Requirement::new`]) breaks the rules; each
    /// cause reads like a `field.Error` (`key: Invalid value: ...`).
    #[error("{}", aggregate(.causes))]
    Invalid {
        /// One message per problem, in upstream's order.
        causes: Vec<String>,
    },
    /// A `matchExpressions` entry names an operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{} is not a valid label selector operator", go_quote(.operator))]
    UnknownOperator {
        /// The operator as written in the object.
        operator: String,
    },
}

/// What is wrong inside one requirement of a query-string selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// A token of the wrong kind.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        /// The offending token ("" at the end of the string).
        found: String,
        /// What upstream lists as acceptable there.
        expected: &'static str,
    },
    /// `in`/`notin` not followed by `(`; upstream's message lacks the comma here.
    #[error("found '{found}' expected: '('")]
    MissingOpenParen {
        /// The token found instead.
        found: String,
    },
    /// Syntactically fine but the key or a value is not allowed.
    #[error("{}", aggregate(.causes))]
    Invalid {
        /// One message per problem, in upstream's order.
        causes: Vec<String>,
    },
}

/// Joins messages like upstream's `utilerrors.Aggregate`: one message bare, several
/// de-duplicated inside brackets.
fn aggregate(causes: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for cause in causes {
        if !seen.contains(&cause.as_str()) {
            seen.push(cause);
        }
    }
    match seen.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Renders a value list as Go's `%#v` does for `[]string`, which upstream puts in its messages.
fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        // Upstream builds these lists by appending to a nil slice.
        return "[]string(nil)".to_owned();
    }
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, validating it like upstream's `labels.NewRequirement`: the key is
    /// a qualified name, values are label values, and their number suits the operator.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        let causes = requirement_problems(&key, operator, &values);
        if causes.is_empty() {
            Ok(Self {
                key,
                operator,
                values,
            })
        } else {
            Err(SelectorError::Invalid { causes })
        }
    }

    /// The label key this requirement tests.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The relation tested.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, in the order given (parsed selectors hold them sorted and de-duplicated).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfy this requirement. Negative operators (`!=`, `notin`, `!key`)
    /// hold when the key is absent; `>`/`<` fail unless both sides are integers.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                actual.is_some_and(|v| self.values.contains(v))
            }
            Operator::NotEquals | Operator::NotIn => {
                actual.is_none_or(|v| !self.values.contains(v))
            }
            Operator::Exists => actual.is_some(),
            Operator::DoesNotExist => actual.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(have)) = actual.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

fn requirement_problems(key: &str, operator: Operator, values: &[String]) -> Vec<String> {
    let mut causes = Vec::new();
    let key_errs = is_qualified_name(key);
    if !key_errs.is_empty() {
        causes.push(format!(
            "key: Invalid value: {}: {}",
            go_quote(key),
            key_errs.join("; ")
        ));
    }
    match operator {
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                causes.push(format!(
                    "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                    go_string_slice(values)
                ));
            }
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
            if values.len() != 1 {
                causes.push(format!(
                    "values: Invalid value: {}: exact-match compatibility requires one single value",
                    go_string_slice(values)
                ));
            }
        }
        Operator::Exists | Operator::DoesNotExist => {
            if !values.is_empty() {
                causes.push(format!(
                    "values: Invalid value: {}: values set must be empty for exists and does not exist",
                    go_string_slice(values)
                ));
            }
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                causes.push(format!(
                    "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                    go_string_slice(values)
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    causes.push(format!(
                        "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                        go_quote(v)
                    ));
                }
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let errs = is_valid_label_value(v);
        if !errs.is_empty() {
            causes.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                go_quote(v),
                errs.join("; ")
            ));
        }
    }
    causes
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
        };
        f.write_str(op)?;
        if parens {
            f.write_str("(")?;
        }
        let mut sorted: Vec<&str> = self.values.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        f.write_str(&sorted.join(","))?;
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A conjunction of label requirements, kept sorted by key. The empty selector matches
/// everything.
///
/// Upstream also has a "nothing" selector (a `nil` `*LabelSelector`); that is not a value of
/// this type: callers holding an `Option<&LabelSelector>` decide what `None` means. For
/// Services in particular a missing or empty `spec.selector` map means "no selector" (select
/// no pods, endpoints managed externally), not "everything" — check that before calling
/// [`Selector::from_map`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the `?labelSelector=` syntax (upstream `labels.Parse`): comma-separated
    /// requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>1`,
    /// `k<1`. Whitespace between tokens is ignored; the empty string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            items: lex(input),
            position: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Converts a `metav1.LabelSelector` (upstream `LabelSelectorAsSelector`): `matchLabels`
    /// become `=` requirements, `matchExpressions` In/NotIn/Exists/DoesNotExist. An empty
    /// `LabelSelector` matches everything.
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key.as_str(),
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        operator: other.to_owned(),
                    });
                }
            };
            requirements.push(Requirement::new(
                expr.key.as_str(),
                operator,
                expr.values.clone().unwrap_or_default(),
            )?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Selects objects whose labels include every pair of `labels` (upstream
    /// `SelectorFromValidatedSet`: the pairs are trusted, not validated). An empty map gives
    /// the everything selector.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            })
            .collect();
        Self { requirements }
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the everything selector.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The value `label` must have for an object to match, if the selector pins it to exactly
    /// one (`k=v`, `k==v`, `k in (v)`); lets callers use an index instead of scanning.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for Selector {
    /// The canonical form (upstream `String()`): requirements by key, values sorted, no spaces
    /// except around `in`/`notin`.
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

/// Validates a `LabelSelector` inside an object (e.g. a Deployment's `spec.selector`) as
/// upstream `ValidateLabelSelector` does, reporting against `path`.
pub fn validate_label_selector(selector: &LabelSelector, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Some(labels) = &selector.match_labels {
        errs.extend(validate_labels(labels, &child(path, "matchLabels")));
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let base = format!("{}[{i}]", child(path, "matchExpressions"));
        let values_path = format!("{base}.values");
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        values_path.as_str(),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        values_path.as_str(),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                format!("{base}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        errs.extend(validate_label_name(&expr.key, &format!("{base}.key")));
        for (j, v) in values.iter().enumerate() {
            for msg in is_valid_label_value(v) {
                errs.push(FieldError::invalid(
                    format!("{values_path}[{j}]"),
                    v.as_str(),
                    msg,
                ));
            }
        }
    }
    errs
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn bytes_to_string(bytes: Vec<u8>) -> String {
    // Tokens are cut only at ASCII bytes, so they stay valid UTF-8; be lenient regardless.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Byte-wise lexer mirroring upstream's, including its quirk that a NUL byte reads as the end
/// of input (so the same strings are accepted and rejected).
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn read(&mut self) -> u8 {
        match self.s.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn next_token(&mut self) -> (Token, String) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            return (Token::EndOfString, String::new());
        }
        self.unread();
        if is_special(ch) {
            self.scan_special()
        } else {
            self.scan_identifier()
        }
    }

    fn scan_identifier(&mut self) -> (Token, String) {
        let mut buf = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if is_special(ch) || is_whitespace(ch) {
                self.unread();
                break;
            }
            buf.push(ch);
        }
        let tok = keyword(&buf).unwrap_or(Token::Identifier);
        (tok, bytes_to_string(buf))
    }

    /// Takes the longest run of special characters that forms an operator (`!=`, `==`, ...).
    fn scan_special(&mut self) -> (Token, String) {
        let mut buf = Vec::new();
        let mut last: Option<(Token, usize)> = None;
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special(ch) {
                self.unread();
                break;
            }
            buf.push(ch);
            if let Some(tok) = keyword(&buf) {
                last = Some((tok, buf.len()));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        match last {
            Some((tok, len)) => {
                buf.truncate(len);
                (tok, bytes_to_string(buf))
            }
            None => (
                Token::Error,
                format!("error expected: keyword found '{}'", bytes_to_string(buf)),
            ),
        }
    }
}

fn lex(input: &str) -> Vec<(Token, String)> {
    let mut lexer = Lexer {
        s: input.as_bytes(),
        pos: 0,
    };
    let mut items = Vec::new();
    loop {
        let item = lexer.next_token();
        let done = item.0 == Token::EndOfString;
        items.push(item);
        if done {
            return items;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    /// `in`/`notin` are plain identifiers where a key or value is expected.
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn peek_at(&self, position: usize, ctx: Context) -> (Token, String) {
        // The last item is always EndOfString; reading past it keeps answering that.
        let (tok, lit) = self
            .items
            .get(position)
            .or(self.items.last())
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        match (ctx, tok) {
            (Context::Values, Token::In | Token::NotIn) => (Token::Identifier, lit),
            _ => (tok, lit),
        }
    }

    fn lookahead(&self, ctx: Context) -> (Token, String) {
        self.peek_at(self.position, ctx)
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let item = self.peek_at(self.position, ctx);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(
                        self.parse_requirement()
                            .map_err(SelectorError::Requirement)?,
                    );
                    let (tok, lit) = self.consume(Context::Values);
                    match tok {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_lit) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError::Unexpected {
                                    found: next_lit,
                                    expected: "identifier after ','",
                                });
                            }
                        }
                        _ => {
                            return Err(SelectorError::Unexpected {
                                found: lit,
                                expected: "',' or 'end of string'",
                            });
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Unexpected {
                        found: lit,
                        expected: "!, identifier, or 'end of string'",
                    });
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, RequirementError> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        let (operator, values) = match inferred {
            Some(op @ (Operator::Exists | Operator::DoesNotExist)) => (op, BTreeSet::new()),
            _ => {
                let op = self.parse_operator()?;
                let values = match op {
                    Operator::In | Operator::NotIn => self.parse_values()?,
                    _ => self.parse_exact_value()?,
                };
                (op, values)
            }
        };
        let values: Vec<String> = values.into_iter().collect();
        let causes = requirement_problems(&key, operator, &values);
        if !causes.is_empty() {
            return Err(RequirementError::Invalid { causes });
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    fn parse_key_and_infer_operator(
        &mut self,
    ) -> Result<(String, Option<Operator>), RequirementError> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(RequirementError::Unexpected {
                found: lit,
                expected: "identifier",
            });
        }
        let errs = is_qualified_name(&lit);
        if !errs.is_empty() {
            // Upstream validates the key here with a nil field path, hence "<nil>".
            return Err(RequirementError::Invalid {
                causes: vec![format!(
                    "<nil>: Invalid value: {}: {}",
                    go_quote(&lit),
                    errs.join("; ")
                )],
            });
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((lit, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, RequirementError> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(RequirementError::Unexpected {
                    found: lit,
                    expected: "in, notin, =, ==, !=, gt, lt",
                });
            }
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, RequirementError> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(RequirementError::MissingOpenParen { found: lit });
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(RequirementError::Unexpected {
                        found: lit,
                        expected: "')'",
                    });
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(RequirementError::Unexpected {
                found: lit,
                expected: "',', ')' or identifier",
            }),
        }
    }

    /// Reads `a,b,c` up to (not including) `)`. Empty slots, as in `(,a)` or `(a,)`, count as
    /// the empty value, as upstream has it.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, RequirementError> {
        let mut values = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    values.insert(lit);
                    let (next, next_lit) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => {}
                        Token::ClosedPar => return Ok(values),
                        _ => {
                            return Err(RequirementError::Unexpected {
                                found: next_lit,
                                expected: "',' or ')'",
                            });
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        values.insert(String::new());
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        self.consume(Context::Values);
                        values.insert(String::new());
                    }
                }
                _ => {
                    return Err(RequirementError::Unexpected {
                        found: lit,
                        expected: "',', or identifier",
                    });
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, RequirementError> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(BTreeSet::from([lit]))
        } else {
            Err(RequirementError::Unexpected {
                found: lit,
                expected: "identifier",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// What a selector string should do: parse to this canonical form and match/not match
    /// these label sets, or fail with exactly this message.
    enum Expect<'a> {
        Ok {
            canonical: &'a str,
            matches: &'a [&'a [(&'a str, &'a str)]],
            rejects: &'a [&'a [(&'a str, &'a str)]],
        },
        Err(String),
    }

    fn check(input: &str, expected: Expect<'_>) {
        match (Selector::parse(input), expected) {
            (
                Ok(sel),
                Expect::Ok {
                    canonical,
                    matches,
                    rejects,
                },
            ) => {
                assert_eq!(sel.to_string(), canonical, "canonical form of {input:?}");
                for set in matches {
                    assert!(sel.matches(&labels(set)), "{input:?} should match {set:?}");
                }
                for set in rejects {
                    assert!(
                        !sel.matches(&labels(set)),
                        "{input:?} should not match {set:?}"
                    );
                }
                assert_eq!(
                    Selector::parse(canonical).as_ref(),
                    Ok(&sel),
                    "round trip of {input:?}"
                );
            }
            (Err(e), Expect::Err(msg)) => assert_eq!(e.to_string(), msg, "error for {input:?}"),
            (Ok(sel), Expect::Err(msg)) => {
                panic!("{input:?} parsed to {sel} but should fail with {msg}")
            }
            (Err(e), Expect::Ok { .. }) => panic!("{input:?} failed: {e}"),
        }
    }

    const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn parse_and_match() {
        use Expect::Ok as Good;
        let cases: Vec<(&str, Expect<'_>)> = vec![
            ("", Good { canonical: "", matches: &[&[], &[("x", "y")]], rejects: &[] }),
            ("   ", Good { canonical: "", matches: &[&[]], rejects: &[] }),
            (
                "x=a,y=b,z=c",
                Good { canonical: "x=a,y=b,z=c", matches: &[&[("x", "a"), ("y", "b"), ("z", "c")]], rejects: &[&[("x", "a")]] },
            ),
            ("z=c , x = a", Good { canonical: "x=a,z=c", matches: &[&[("x", "a"), ("z", "c")]], rejects: &[] }),
            ("x==a", Good { canonical: "x==a", matches: &[&[("x", "a")]], rejects: &[&[("x", "b")], &[]] }),
            ("x!=a", Good { canonical: "x!=a", matches: &[&[], &[("x", "b")]], rejects: &[&[("x", "a")]] }),
            ("x=", Good { canonical: "x=", matches: &[&[("x", "")]], rejects: &[&[], &[("x", "a")]] }),
            ("x=,z= ", Good { canonical: "x=,z=", matches: &[&[("x", ""), ("z", "")]], rejects: &[] }),
            ("x", Good { canonical: "x", matches: &[&[("x", "")], &[("x", "z")]], rejects: &[&[("y", "z")]] }),
            ("!x", Good { canonical: "!x", matches: &[&[], &[("y", "z")]], rejects: &[&[("x", "z")]] }),
            (
                "x in (b, a,a)",
                Good { canonical: "x in (a,b)", matches: &[&[("x", "a")], &[("x", "b")]], rejects: &[&[], &[("x", "c")]] },
            ),
            (
                "x notin (a,b)",
                Good { canonical: "x notin (a,b)", matches: &[&[], &[("x", "c")]], rejects: &[&[("x", "a")]] },
            ),
            ("x in ()", Good { canonical: "x in ()", matches: &[&[("x", "")]], rejects: &[&[("x", "a")]] }),
            ("x in (,a)", Good { canonical: "x in (,a)", matches: &[&[("x", "")], &[("x", "a")]], rejects: &[] }),
            ("x in (a,)", Good { canonical: "x in (,a)", matches: &[&[("x", "")]], rejects: &[] }),
            ("x in (a,,b)", Good { canonical: "x in (,a,b)", matches: &[&[("x", "")]], rejects: &[] }),
            ("x>1", Good { canonical: "x>1", matches: &[&[("x", "2")]], rejects: &[&[("x", "1")], &[("x", "a")], &[]] }),
            ("x<1", Good { canonical: "x<1", matches: &[&[("x", "-5")], &[("x", "0")]], rejects: &[&[("x", "1")], &[]] }),
            ("x>1,z<5", Good { canonical: "x>1,z<5", matches: &[&[("x", "2"), ("z", "4")]], rejects: &[] }),
            ("notin=in", Good { canonical: "notin=in", matches: &[&[("notin", "in")]], rejects: &[] }),
            ("in in (notin)", Good { canonical: "in in (notin)", matches: &[&[("in", "notin")]], rejects: &[] }),
            (
                "example.com/app in (web), !tier",
                Good { canonical: "example.com/app in (web),!tier", matches: &[&[("example.com/app", "web")]], rejects: &[] },
            ),
            ("x=a \0 garbage (", Good { canonical: "x=a", matches: &[&[("x", "a")]], rejects: &[] }),
            ("x=a||y=b", Expect::Err(format!("unable to parse requirement: values[0][x]: Invalid value: \"a||y\": {VALUE_MSG}"))),
            ("x==a==b", Expect::Err("found '==', expected: ',' or 'end of string'".into())),
            ("!x=a", Expect::Err("found '=', expected: ',' or 'end of string'".into())),
            ("x<a", Expect::Err("unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer".into())),
            ("x y", Expect::Err("unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt".into())),
            ("x in a", Expect::Err("unable to parse requirement: found 'a' expected: '('".into())),
            ("x in (a", Expect::Err("unable to parse requirement: found '', expected: ',' or ')'".into())),
            ("x in (a b)", Expect::Err("unable to parse requirement: found 'b', expected: ',' or ')'".into())),
            ("x in (a,=)", Expect::Err("unable to parse requirement: found '=', expected: ',', or identifier".into())),
            ("x in (=)", Expect::Err("unable to parse requirement: found '=', expected: ',', ')' or identifier".into())),
            ("x=(", Expect::Err("unable to parse requirement: found '(', expected: identifier".into())),
            ("!", Expect::Err("unable to parse requirement: found '', expected: identifier".into())),
            ("x,", Expect::Err("found '', expected: identifier after ','".into())),
            ("x,,y", Expect::Err("found ',', expected: identifier after ','".into())),
            ("=x", Expect::Err("found '=', expected: !, identifier, or 'end of string'".into())),
            (
                "a/b/c",
                Expect::Err("unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into()),
            ),
            ("x=-a", Expect::Err(format!("unable to parse requirement: values[0][x]: Invalid value: \"-a\": {VALUE_MSG}"))),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: op.to_owned(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn from_label_selector() {
        let empty = Selector::from_label_selector(&LabelSelector::default());
        assert_eq!(empty.as_ref().map(Selector::is_empty), Ok(true));

        let ls = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                req("tier", "In", Some(&["front", "back"])),
                req("canary", "DoesNotExist", None),
                req("env", "NotIn", Some(&["prod"])),
            ]),
        };
        let sel = Selector::from_label_selector(&ls);
        assert_eq!(
            sel.as_ref().map(ToString::to_string).as_deref(),
            Ok("app=web,!canary,env notin (prod),tier in (back,front)")
        );
        let sel = sel.unwrap_or_default();
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("env", "prod")
        ])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("canary", "")
        ])));
        assert_eq!(sel.requires_exact_match("app"), Some("web"));
        assert_eq!(sel.requires_exact_match("tier"), None);

        let bad = |e: LabelSelectorRequirement| {
            Selector::from_label_selector(&LabelSelector {
                match_expressions: Some(vec![e]),
                ..Default::default()
            })
            .err()
            .map(|e| e.to_string())
        };
        assert_eq!(
            bad(req("a", "In", None)).as_deref(),
            Some(
                "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
            )
        );
        assert_eq!(
            bad(req("a", "Exists", Some(&["x", "y"]))).as_deref(),
            Some(
                "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
            )
        );
        assert_eq!(
            bad(req("a", "Gt", Some(&["1"]))).as_deref(),
            Some("\"Gt\" is not a valid label selector operator")
        );
        assert_eq!(
            bad(req("a b", "In", Some(&["-"]))).as_deref(),
            Some(
                format!(
                    "[key: Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'), values[0][a b]: Invalid value: \"-\": {VALUE_MSG}]"
                )
                .as_str()
            )
        );
    }

    #[test]
    fn from_map() {
        assert!(Selector::from_map(&BTreeMap::new()).is_empty());
        let sel = Selector::from_map(&labels(&[("b", "2"), ("a", "1")]));
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(sel.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!sel.matches(&labels(&[("a", "1")])));
    }

    #[test]
    fn validate_object_selector() {
        let ls = LabelSelector {
            match_labels: Some(labels(&[("app", "-bad")])),
            match_expressions: Some(vec![
                req("a", "In", None),
                req("b", "Exists", Some(&["x"])),
                req("c", "Gt", Some(&["1"])),
                req("", "In", Some(&["ok", "no way"])),
            ]),
        };
        let got: Vec<String> = validate_label_selector(&ls, "spec.selector")
            .iter()
            .map(ToString::to_string)
            .collect();
        let name_msg = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
        assert_eq!(
            got,
            [
                format!("spec.selector.matchLabels: Invalid value: \"-bad\": {VALUE_MSG}"),
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'".to_owned(),
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".to_owned(),
                "spec.selector.matchExpressions[2].operator: Invalid value: \"Gt\": not a valid selector operator".to_owned(),
                "spec.selector.matchExpressions[3].key: Invalid value: \"\": name part must be non-empty".to_owned(),
                format!("spec.selector.matchExpressions[3].key: Invalid value: \"\": {name_msg}"),
                format!("spec.selector.matchExpressions[3].values[1]: Invalid value: \"no way\": {VALUE_MSG}"),
            ]
        );
    }

    fn selectorish() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-c0-9!=<>(), \t\\x00]{0,24}",
            "([a-c0-9!=<>(), ]|in|notin){0,8}",
            r"((!?[ab]{1,2}( ?(=|==|!=|<|>) ?[0-9ab]{0,2}| (in|notin) \([ab, ]{0,6}\))?)(, ?)){0,4}",
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(input in selectorish()) {
            if let Ok(sel) = Selector::parse(&input) {
                let printed = sel.to_string();
                prop_assert_eq!(Selector::parse(&printed), Ok(sel), "printed as {:?}", printed);
            }
        }
    }
}
