//! Lexing helpers shared by the views: tokens, linear white space, quoted strings,
//! parameter lists and comma-separated lists that respect quotes and angle brackets.
//!
//! Everything here works on `&str` slices of the received buffer and never allocates.
//! It must not know about any particular header. Character classes are 256-entry tables
//! so the hot loops do one load per byte.

/// Builds a byte-class table from a `const` predicate body over `b`.
macro_rules! byte_table {
    (|$b:ident| $pred:expr) => {{
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            t[i] = $pred;
            i += 1;
        }
        t
    }};
}
pub(crate) use byte_table;

/// RFC 3261 `token` characters.
static TOKEN: [bool; 256] = byte_table!(|b| b.is_ascii_alphanumeric()
    || matches!(
        b,
        b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
    ));

/// Bytes that end an unquoted parameter value: `;`, `,`, `?` and LWS.
static PARAM_VALUE_END: [bool; 256] =
    byte_table!(|b| matches!(b, b';' | b',' | b'?' | b' ' | b'\t' | b'\r' | b'\n'));

/// RFC 3261 `token` characters.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Linear white space inside a header value. A CR or LF inside a value span can only be
/// line folding, because the header index ends a value at a CRLF not followed by SP/HT.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Index of the first byte at or after `i` that is not LWS (or `b.len()`).
#[inline]
pub(crate) fn skip_lws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_lws(b[i]) {
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that is not a token character (or `b.len()`).
#[inline]
pub(crate) fn skip_token(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_token(b[i]) {
        i += 1;
    }
    i
}

/// ASCII case-insensitive equality with `lower`, which must be lower-case already (one
/// case fold per byte instead of two).
#[inline]
pub(crate) fn eq_lower(s: &str, lower: &str) -> bool {
    s.len() == lower.len()
        && s.bytes()
            .zip(lower.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b)
}

#[inline]
pub(crate) fn trim_lws(s: &str) -> &str {
    // LWS bytes are ASCII, so every cut lies on a char boundary.
    let b = s.as_bytes();
    let start = skip_lws(b, 0);
    let mut end = b.len();
    while end > start && is_lws(b[end - 1]) {
        end -= 1;
    }
    &s[start..end]
}

/// Index just past the closing quote of a quoted string starting at `s[start] == '"'`.
/// Returns `None` when the quote is never closed.
#[inline]
pub(crate) fn skip_quoted(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    // Most quoted strings (display names, tags, realms) are short: a plain loop beats
    // memchr's setup there; longer ones (nonces, URNs) go on with memchr.
    let short_end = s.len().min(i + 16);
    while i < short_end {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    while i < s.len() {
        i += memchr::memchr2(b'\\', b'"', &s[i..])?;
        if s[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
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
        loop {
            // Outside `<…>` only a quote, `<` or `,` changes anything (`>` leaves
            // `in_angle` false); inside, only a quote or `>` does (`<` leaves it true, a
            // comma is part of the URI). So jump from one of those to the next.
            let next = if in_angle {
                memchr::memchr2(b'"', b'>', &b[i..])
            } else {
                memchr::memchr3(b'"', b'<', b',', &b[i..])
            };
            let Some(off) = next else {
                break;
            };
            i += off;
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
        let mut i = skip_lws(b, self.pos);
        if i >= b.len() {
            return None;
        }
        if b[i] != b';' {
            self.failed = true;
            return Some(Err(()));
        }
        let name_start = skip_lws(b, i + 1);
        i = skip_token(b, name_start);
        let name = &self.s[name_start..i];
        if name.is_empty() {
            self.failed = true;
            return Some(Err(()));
        }
        i = skip_lws(b, i);
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            let v_start = skip_lws(b, i + 1);
            i = v_start;
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
                while i < b.len() && !PARAM_VALUE_END[usize::from(b[i])] {
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
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.saturating_mul(10).saturating_add(u64::from(d));
    }
    Some(v)
}

/// Parses an unsigned decimal of 1 or more digits that must fit in `u32`.
pub(crate) fn parse_u32_strict(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s.len() <= 9 {
        // Nine digits stay below 10^9 < u32::MAX: no overflow checks needed.
        let mut v: u32 = 0;
        for b in s.bytes() {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + u32::from(d);
        }
        return Some(v);
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // 20 digits can pass u64::MAX: checked, and any such value is not a u32 anyway.
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
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
