//! Query strings of the agent's requests: repeated keys (`command=a&command=b`), booleans
//! spelled as Go's `strconv.ParseBool` accepts them, and integers.

/// The decoded `key=value` pairs of a query string, in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

/// A parameter whose value is not of its type.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("invalid value {value:?} for query parameter {name}")]
pub struct BadParam {
    pub name: String,
    pub value: String,
}

impl Query {
    pub fn parse(query: &str) -> Self {
        Self(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `name`, as Go's `url.Values.Get` returns the first: kubectl never
    /// repeats these, so either is right.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order (`command`).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `name` as a boolean; absent or empty is false.
    pub fn flag(&self, name: &str) -> Result<bool, BadParam> {
        match self.get(name) {
            None | Some("") => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(v) => Err(self.bad(name, v)),
        }
    }

    /// `name` as an integer; absent or empty is `None`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, BadParam> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| self.bad(name, v)),
        }
    }

    fn bad(&self, name: &str, value: &str) -> BadParam {
        BadParam {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values() {
        let q = Query::parse(
            "command=sh&command=-c&command=echo%20hi%3B+x&stdin=1&tty=false&tailLines=5&x=",
        );
        assert_eq!(q.all("command"), ["sh", "-c", "echo hi; x"]);
        assert_eq!(q.flag("stdin"), Ok(true));
        assert_eq!(q.flag("tty"), Ok(false));
        assert_eq!(q.flag("stdout"), Ok(false));
        assert_eq!(q.flag("x"), Ok(false));
        assert_eq!(q.int("tailLines"), Ok(Some(5)));
        assert_eq!(q.int("limitBytes"), Ok(None));
        let bad = Query::parse("follow=yes&tailLines=-x");
        assert!(bad.flag("follow").is_err());
        assert_eq!(
            bad.int("tailLines").map_err(|e| e.to_string()),
            Err("invalid value \"-x\" for query parameter tailLines".into())
        );
    }

    proptest! {
        #[test]
        fn any_query_parses_without_panicking(q in ".*") {
            let q = Query::parse(&q);
            let _ = (q.flag("a"), q.int("b"), q.all("c"));
        }

        #[test]
        fn encoded_values_round_trip(vals in proptest::collection::vec(".*", 0..5)) {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(vals.iter().map(|v| ("command", v)))
                .finish();
            prop_assert_eq!(Query::parse(&q).all("command"), vals);
        }
    }
}
