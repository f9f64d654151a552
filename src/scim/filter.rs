//! The two small grammars of RFC 7644 that the IdPs' SCIM clients use: list filters
//! (§3.4.2.2) restricted to `attr eq "value"` joined by `and` (what Entra ID and Okta send:
//! `userName eq "alice@example.com"`, `externalId eq "…"`, `displayName eq "Sales"`), and
//! PATCH paths (§3.5.2): `attr`, `attr.sub`, `urn:…:attr`, and `attr[sub eq "v"]` with an
//! optional `.sub` after the bracket. Hand-written: no maintained crate parses SCIM filters
//! without pulling a large framework; the subset is small and bounded (`MAX_FILTER_BYTES`).

/// Longest filter or path read; longer ones are `invalidFilter` / `invalidPath`.
pub const MAX_FILTER_BYTES: usize = 512;

/// One `attr eq "value"` comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eq {
    /// The attribute path, as written (compared case-insensitively).
    pub attr: String,
    pub value: String,
}

/// A list filter: every comparison must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(pub Vec<Eq>);

/// A PATCH path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The top-level attribute (a schema URN prefix removed, kept in `urn`).
    pub attr: String,
    /// The extension schema the attribute lives in, when the path named one.
    pub urn: Option<String>,
    /// `[sub eq "v"]`: which elements of a multi-valued attribute.
    pub select: Option<Eq>,
    /// `.sub` after the attribute or the bracket.
    pub sub: Option<String>,
}

/// Parses a list filter. `None`: not in the supported subset.
pub fn parse_filter(text: &str) -> Option<Filter> {
    if text.len() > MAX_FILTER_BYTES {
        return None;
    }
    let mut rest = text.trim();
    let mut out = Vec::new();
    loop {
        let (eq, after) = comparison(rest)?;
        out.push(eq);
        let after = after.trim_start();
        if after.is_empty() {
            return Some(Filter(out));
        }
        let (word, tail) = after.split_once(char::is_whitespace)?;
        if !word.eq_ignore_ascii_case("and") {
            return None;
        }
        rest = tail.trim_start();
    }
}

/// `attr eq "value"` at the start of `text`; the rest after the closing quote.
fn comparison(text: &str) -> Option<(Eq, &str)> {
    let (attr, rest) = text.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (op, rest) = rest.split_once(char::is_whitespace)?;
    if !op.eq_ignore_ascii_case("eq") || !valid_attr(attr) {
        return None;
    }
    let (value, rest) = quoted(rest.trim_start())?;
    Some((
        Eq {
            attr: attr.to_owned(),
            value,
        },
        rest,
    ))
}

/// A JSON string literal at the start of `text` (RFC 7644 filters quote values as JSON).
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => {
                let literal = &text[..i + 2];
                let value: String = serde_json::from_str(literal).ok()?;
                return Some((value, &body[i + 1..]));
            }
            _ => escaped = false,
        }
    }
    None
}

fn valid_attr(attr: &str) -> bool {
    !attr.is_empty()
        && attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '_' | '-' | '$'))
}

/// Parses a PATCH path. `None`: not in the supported subset.
pub fn parse_path(text: &str) -> Option<Path> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_FILTER_BYTES {
        return None;
    }
    // A schema URN prefix: everything up to the last ':' before any '[' or '.'-suffixed part.
    let head_end = text.find('[').unwrap_or(text.len());
    let (urn, rest) = match text[..head_end].rfind(':') {
        Some(colon) if text.starts_with("urn:") => {
            (Some(text[..colon].to_owned()), &text[colon + 1..])
        }
        _ => (None, text),
    };
    let (attr, select, sub) = match rest.split_once('[') {
        Some((attr, tail)) => {
            let (inner, after) = tail.split_once(']')?;
            let (eq, left) = comparison(inner.trim())?;
            if !left.trim().is_empty() {
                return None;
            }
            let sub = match after {
                "" => None,
                s => Some(s.strip_prefix('.')?.to_owned()),
            };
            (attr.to_owned(), Some(eq), sub)
        }
        None => match rest.split_once('.') {
            Some((a, s)) => (a.to_owned(), None, Some(s.to_owned())),
            None => (rest.to_owned(), None, None),
        },
    };
    if !valid_attr(&attr)
        || sub
            .as_deref()
            .is_some_and(|s| !valid_attr(s) || s.contains('.'))
    {
        return None;
    }
    Some(Path {
        attr,
        urn,
        select,
        sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_of_entra_and_okta_parse_and_others_do_not() {
        let f = parse_filter(r#"userName eq "alice@example.com""#).unwrap();
        assert_eq!(f.0[0].attr, "userName");
        assert_eq!(f.0[0].value, "alice@example.com");
        let f = parse_filter(r#"externalId eq "a\"b" and displayName EQ "x y""#).unwrap();
        assert_eq!(f.0.len(), 2);
        assert_eq!(f.0[0].value, "a\"b");
        assert_eq!(f.0[1].value, "x y");
        for bad in [
            "",
            "userName",
            r#"userName co "a""#,
            r#"userName eq "a" or id eq "b""#,
            r#"userName eq "unterminated"#,
            r#"userName eq "a" junk"#,
        ] {
            assert!(parse_filter(bad).is_none(), "{bad}");
        }
        assert!(parse_filter(&format!("userName eq \"{}\"", "a".repeat(600))).is_none());
    }

    #[test]
    fn patch_paths_parse() {
        let p = parse_path("active").unwrap();
        assert_eq!((p.attr.as_str(), p.select, p.sub), ("active", None, None));
        let p = parse_path("name.givenName").unwrap();
        assert_eq!(p.sub.as_deref(), Some("givenName"));
        let p = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr, "emails");
        assert_eq!(p.select.unwrap().value, "work");
        assert_eq!(p.sub.as_deref(), Some("value"));
        let p = parse_path(r#"members[value eq "u1"]"#).unwrap();
        assert_eq!(p.select.unwrap().attr, "value");
        let p = parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
            .unwrap();
        assert_eq!(p.attr, "department");
        assert_eq!(
            p.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        for bad in ["", "a[", r#"a[b eq "c"]x"#, "a b", "a.b.c"] {
            assert!(parse_path(bad).is_none(), "{bad}");
        }
    }
}
