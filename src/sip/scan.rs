//! Lexing helpers shared by the views: tokens, linear white space, quoted strings,
//! parameter lists and comma-separated lists that respect quotes and angle brackets.
//!
//! Everything here works on `&str` slices of the received buffer and never allocates.
//! It must not know about any particular header.

/// RFC 3261 `token` characters.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Linear white space inside a header value. A CR or LF inside a value span can only be
/// line folding, because the header index ends a value at a CRLF not followed by SP/HT.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8))
}

/// Index just past the closing quote of a quoted string starting at `s[start] == '"'`.
/// Returns `None` when the quote is never closed.
pub(crate) fn skip_quoted(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Splits a header value at top-level commas (outside quotes and `<…>`).
/// Yields each element trimmed; an unterminated quote or bracket yields `Err(())` once.
pub(crate) struct CommaSplit<'a> {
    s: &'a str,
    pos: usize,
    done: bool,
}

pub(crate) fn split_commas(s: &str) -> CommaSplit<'_> {
    CommaSplit {
        s,
        pos: 0,
        done: false,
    }
}

impl<'a> Iterator for CommaSplit<'a> {
    type Item = Result<&'a str, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        let mut in_angle = false;
        while i < b.len() {
            match b[i] {
                b'"' => match skip_quoted(b, i) {
                    Some(end) => {
                        i = end;
                        continue;
                    }
                    None => {
                        self.done = true;
                        return Some(Err(()));
                    }
                },
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                b',' if !in_angle => {
                    self.pos = i + 1;
                    return Some(Ok(trim_lws(&self.s[start..i])));
                }
                _ => {}
            }
            i += 1;
        }
        self.done = true;
        if in_angle {
            return Some(Err(()));
        }
        Some(Ok(trim_lws(&self.s[start..])))
    }
}

/// One `;name[=value]` parameter. `value` is raw: a quoted string keeps its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a str,
    pub value: Option<&'a str>,
}

impl<'a> Param<'a> {
    /// The value with surrounding quotes removed (escapes are left as written).
    pub fn unquoted(&self) -> Option<&'a str> {
        self.value.map(unquote)
    }
}

pub(crate) fn unquote(v: &str) -> &str {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Iterates a parameter list such as `;branch=z9hG4bK1;rport;received=1.2.3.4`.
/// The input must be empty or start with `;` (after optional LWS). An empty name
/// (`;;`), a missing value after `=`, or text that is not a parameter yields `Err(())`.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    s: &'a str,
    pos: usize,
    failed: bool,
}

impl<'a> Params<'a> {
    pub(crate) fn new(s: &'a str) -> Params<'a> {
        Params {
            s,
            pos: 0,
            failed: false,
        }
    }

    /// The first parameter with this name (case-insensitive), as `Some(value)`.
    pub fn find(&self, name: &str) -> Option<Option<&'a str>> {
        self.clone()
            .filter_map(Result::ok)
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value)
    }

    /// Checks the whole list; duplicates are allowed (RFC 3261 does not forbid them).
    pub fn validate(&self) -> Result<(), super::error::ParseError> {
        for p in self.clone() {
            p.map_err(|()| super::error::ParseError::InvalidParam)?;
        }
        Ok(())
    }

    /// The raw text of the list.
    pub fn as_str(&self) -> &'a str {
        self.s
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<Param<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let b = self.s.as_bytes();
        let mut i = self.pos;
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        if b[i] != b';' {
            self.failed = true;
            return Some(Err(()));
        }
        i += 1;
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        let name = &self.s[name_start..i];
        if name.is_empty() {
            self.failed = true;
            return Some(Err(()));
        }
        while i < b.len() && is_lws(b[i]) {
            i += 1;
        }
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            let v_start = i;
            if i < b.len() && b[i] == b'"' {
                match skip_quoted(b, i) {
                    Some(end) => i = end,
                    None => {
                        self.failed = true;
                        return Some(Err(()));
                    }
                }
            } else {
                // token, host, IPv6 reference (with or without brackets)
                while i < b.len() && !matches!(b[i], b';' | b',' | b'?') && !is_lws(b[i]) {
                    i += 1;
                }
            }
            if i == v_start {
                self.failed = true;
                return Some(Err(()));
            }
            value = Some(&self.s[v_start..i]);
        }
        self.pos = i;
        Some(Ok(Param { name, value }))
    }
}

/// Parses an unsigned decimal of 1 or more digits, saturating at `u64::MAX`.
pub(crate) fn parse_u64_saturating(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        v = v.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    Some(v)
}

/// Parses an unsigned decimal of 1 or more digits that must fit in `u32`.
pub(crate) fn parse_u32_strict(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_values_flags_and_quotes() {
        let p: Vec<_> = Params::new(";branch=z9hG4bK1 ; rport;tag=\"a;b\"")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].value, Some("z9hG4bK1"));
        assert_eq!(
            p[1],
            Param {
                name: "rport",
                value: None
            }
        );
        assert_eq!(p[2].unquoted(), Some("a;b"));
    }

    #[test]
    fn params_reject_empty_names_and_values() {
        assert!(Params::new(";;").validate().is_err());
        assert!(Params::new(";a=").validate().is_err());
        assert!(Params::new("junk").validate().is_err());
        assert!(Params::new(";a=\"open").validate().is_err());
    }

    #[test]
    fn comma_split_respects_quotes_and_brackets() {
        let v: Vec<_> = split_commas("\"a,b\" <sip:x;p=1,2>, <sip:y>")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(v, ["\"a,b\" <sip:x;p=1,2>", "<sip:y>"]);
        assert!(split_commas("\"open, x").any(|r| r.is_err()));
    }

    #[test]
    fn numbers_saturate_or_fail() {
        assert_eq!(parse_u64_saturating("0068"), Some(68));
        assert_eq!(parse_u64_saturating(&"9".repeat(100)), Some(u64::MAX));
        assert_eq!(parse_u64_saturating("-1"), None);
        assert_eq!(parse_u32_strict("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32_strict("4294967296"), None);
        assert_eq!(parse_u32_strict(""), None);
    }
}
