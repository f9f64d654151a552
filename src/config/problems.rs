//! Reporting what is wrong with a file: the problems found so far (each with its key), the
//! one declaration of each numeric key's default and range ([`Setting`], [`setting!`]), the
//! closed sets of names a key may take ([`Named`], [`OneOf`]), and a TOML error turned into a
//! problem with its key. It imports nothing from the other config files, so every one of them
//! may use it.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Every problem found in a configuration; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.problems))]
pub struct ConfigErrors {
    pub(super) problems: Vec<ConfigProblem>,
}

/// One problem: the key it concerns (`registrar.min_expires`, `accounts[1].domain`) and what is
/// wrong with it. Displays as `key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    key: String,
    message: String,
}

/// A numeric key's default and inclusive range, declared once (with [`setting!`]) next to
/// its raw field; `config/example.toml` states both beside the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Setting {
    pub(super) default: u64,
    pub(super) min: u64,
    pub(super) max: u64,
}

impl Setting {
    /// Fails to compile when the default lies outside the range.
    pub(super) const fn new(default: u64, min: u64, max: u64) -> Setting {
        assert!(
            min <= default && default <= max,
            "a default outside its range"
        );
        Setting { default, min, max }
    }

    /// The same range with another default (keys that share a range).
    pub(super) const fn with_default(self, default: u64) -> Setting {
        Setting::new(default, self.min, self.max)
    }
}

/// Declares a numeric key once: `setting!(NAME, default_fn, default, min..=max)` makes the
/// [`Setting`] constant that validation checks against and the default function serde's
/// `#[serde(default = "default_fn")]` names.
macro_rules! setting {
    ($(#[$doc:meta])* $name:ident, $default_fn:ident, $setting:expr) => {
        $(#[$doc])*
        pub(super) const $name: $crate::config::problems::Setting = $setting;
        fn $default_fn() -> u64 {
            $name.default
        }
    };
}
pub(super) use setting;

/// A closed set of names a key may take (`log.format`, `domains[].sso`, ...).
pub(super) trait Named: Copy + Sized + 'static {
    /// Every value, in the order the error message lists them.
    const ALL: &'static [Self];
    /// The spelling in the file.
    fn name(self) -> &'static str;
    /// Whether `text` names this value (exactly, unless a set says otherwise).
    fn is_named(self, text: &str) -> bool {
        self.name() == text
    }
}

/// A closed-set key as read from the file: its text and which of `T`'s values it names, if
/// any. An unknown name is kept so that validation reports it with its key and the allowed
/// names and carries on with the rest of the file (serde's own enum error would end the parse
/// at the first one); the text stays for messages that quote the file's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OneOf<T> {
    pub(super) text: String,
    pub(super) value: Option<T>,
}

impl<T: Named> OneOf<T> {
    pub(super) fn parse(text: String) -> OneOf<T> {
        let value = T::ALL.iter().copied().find(|value| value.is_named(&text));
        OneOf { text, value }
    }

    /// A default.
    pub(super) fn known(value: T) -> OneOf<T> {
        OneOf {
            text: value.name().to_owned(),
            value: Some(value),
        }
    }
}

impl<'de, T: Named> Deserialize<'de> for OneOf<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(OneOf::parse)
    }
}

/// `"a", "b", "c"`: the names of a closed set, for messages.
pub(super) fn quoted_names<T: Named>(_: PhantomData<T>) -> String {
    T::ALL
        .iter()
        .map(|value| format!("{:?}", value.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Problems found so far.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigProblem>);

impl Problems {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }

    /// Records a problem when `value` is outside the setting's range; returns `value` either
    /// way.
    pub(super) fn range(&mut self, key: &str, value: u64, setting: Setting) -> u64 {
        if !(setting.min..=setting.max).contains(&value) {
            self.push(
                key,
                format!(
                    "must be between {} and {} (got {value})",
                    setting.min, setting.max
                ),
            );
        }
        value
    }

    /// The value of a closed-set key; for an unknown name, records `"x" is not one of "a",
    /// "b"` and returns `None`.
    pub(super) fn known<T: Named>(
        &mut self,
        key: impl Into<String>,
        value: &OneOf<T>,
    ) -> Option<T> {
        if value.value.is_none() {
            let names = quoted_names(PhantomData::<T>);
            self.push(key, format!("{:?} is not one of {names}", value.text));
        }
        value.value
    }

    /// [`Problems::known`], with `fallback` for an unknown name.
    pub(super) fn one_of<T: Named>(
        &mut self,
        key: impl Into<String>,
        value: &OneOf<T>,
        fallback: T,
    ) -> T {
        self.known(key, value).unwrap_or(fallback)
    }

    pub(super) fn range_usize(&mut self, key: &str, value: u64, setting: Setting) -> usize {
        usize::try_from(self.range(key, value, setting)).unwrap_or(usize::MAX)
    }

    pub(super) fn range_secs(&mut self, key: &str, value: u64, setting: Setting) -> Duration {
        Duration::from_secs(self.range(key, value, setting))
    }
}

impl ConfigErrors {
    /// The problems, in the order found (file order, then cross-checks).
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    pub(super) fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::from_problems(vec![ConfigProblem::new(key, message)])
    }

    pub(super) fn from_problems(problems: Vec<ConfigProblem>) -> Self {
        debug_assert!(!problems.is_empty());
        Self { problems }
    }
}

impl ConfigProblem {
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The dotted key path, such as `sip.udp[0]` or `accounts[2].ha1_md5`.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn lines(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ConfigProblem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns a serde/toml error into one problem. toml reports a message and a byte span; the key
/// is recovered from the span's line (`key = value` under the nearest `[table]` header) when that
/// line has the usual shape, and the line and column are always given.
pub(super) fn toml_problem(text: &str, err: &toml::de::Error) -> ConfigProblem {
    let message = plain_words(&err.message().trim().replace('\n', " "));
    let Some(start) = err
        .span()
        .map(|span| span.start)
        .filter(|start| text.is_char_boundary(*start))
    else {
        return ConfigProblem::new("config", message);
    };
    let before = &text[..start];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |at| start + at);
    let line_number = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let location = format!("line {line_number}, column {column}");
    match key_at(&text[..line_end]) {
        Some(key) => ConfigProblem::new(key, format!("{message} ({location})")),
        None => ConfigProblem::new(location, message),
    }
}

/// Whether parsing may go on past this error by commenting out its line: an unknown key or a
/// value of the wrong type (its default then applies while the rest is checked).
pub(super) fn skippable(message: &str) -> bool {
    [
        "unknown field",
        "invalid type",
        "invalid value",
        "invalid length",
    ]
    .iter()
    .any(|m| message.starts_with(m))
}

/// Whether `later` only restates `earlier`: a "missing field" for the key whose bad value was
/// commented out.
pub(super) fn follows_from(earlier: &ConfigProblem, later: &ConfigProblem) -> bool {
    let Some(rest) = later.message.strip_prefix("missing field `") else {
        return false;
    };
    let field = rest.split('`').next().unwrap_or_default();
    earlier.key == field || earlier.key.ends_with(&format!(".{field}"))
}

/// A validation problem with the line of its key appended, when the file has that key on a
/// line of its own (`key = value` under its table); unchanged otherwise.
pub(super) fn with_line(problem: ConfigProblem, text: &str) -> ConfigProblem {
    if problem.message.contains("(line ") {
        return problem;
    }
    let mut end = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        end += line.len();
        let here = line.trim_start();
        if here.starts_with('#') || !here.contains('=') {
            continue;
        }
        if key_at(text[..end].trim_end_matches(['\n', '\r'])).as_deref() == Some(&problem.key) {
            let message = format!("{} (line {})", problem.message, n + 1);
            return ConfigProblem::new(problem.key, message);
        }
    }
    problem
}

/// serde's wording in an operator's: `invalid type: string "sixty", expected u32` becomes
/// `must be a whole number, not the text "sixty"`.
fn plain_words(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_owned();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let wanted = match expected.trim() {
        e if ["u8", "u16", "u32", "u64", "usize", "i32", "i64"].contains(&e) => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" => "text in double quotes",
        "a sequence" => "a list in square brackets, like [\"a\", \"b\"]",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        other => other,
    };
    let found = found.trim();
    let got = if let Some(s) = found.strip_prefix("string ") {
        format!("the text {s}")
    } else if let Some(n) = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "))
    {
        format!("the number {}", n.trim_matches('`'))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        b.trim_matches('`').to_owned()
    } else {
        match found {
            "sequence" => "a list".to_owned(),
            "map" => "a table".to_owned(),
            other => other.to_owned(),
        }
    };
    format!("must be {wanted}, not {got}")
}

/// The dotted key of the last line of `text`: a table header's own path, or `table.key` for a
/// `key = value` line. `None` when the line has neither shape (say, inside a multi-line array).
fn key_at(text: &str) -> Option<String> {
    let mut table = String::new();
    let mut array_counts: HashMap<&str, usize> = HashMap::new();
    let mut last = "";
    for line in text.lines() {
        last = line;
        let trimmed = line.trim();
        if let Some(name) = header(trimmed, "[[", "]]") {
            let count = array_counts.entry(name).or_insert(0);
            table = format!("{name}[{count}]");
            *count += 1;
        } else if let Some(name) = header(trimmed, "[", "]") {
            table = name.to_owned();
        }
    }
    let last = last.trim();
    if last.starts_with('[') {
        return (!table.is_empty()).then_some(table);
    }
    let (key, _) = last.split_once('=')?;
    let key = key.trim();
    if !is_bare_key(key) {
        return None;
    }
    Some(if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    })
}

/// The name of a `[name]` or `[[name]]` header line made of bare keys.
fn header<'a>(line: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(open)?;
    let name = rest[..rest.find(close)?].trim();
    is_bare_key(name).then_some(name)
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
