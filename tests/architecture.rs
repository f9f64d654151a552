//! Architecture rules of issue 14, checked on the source text of `src/`:
//!
//! - no import cycle between files: the graph of `crate::…` and `super::…` paths between the
//!   files of `src/` (module paths resolved to the file that defines them) has no cycle.
//!   Test-only code (`#[cfg(test)]` items, `tests.rs` files) is not part of the graph;
//! - no import cycle between the top-level modules (the layering of `src/lib.rs`);
//! - no file over [`MAX_LINES`] lines, except the SIP parser and test files;
//! - no struct in `src/dispatch` with more than [`MAX_DISPATCH_FIELDS`] fields.
//!
//! The reader below is a small lexer, not a Rust parser: it drops comments, string and char
//! literals, then follows paths. It is enough for the way this repository writes code; a new
//! construct it misreads shows up as a wrong edge in the failure message.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file allowed in `src/`, parser and tests aside.
const MAX_LINES: usize = 700;
/// The SIP parser: the one place that reads raw header bytes, allowed to be long.
const PARSER_FILES: &[&str] = &[
    "sip/message.rs",
    "sip/views.rs",
    "sip/uri.rs",
    "sip/scan.rs",
    "sip/header.rs",
];
/// Most fields a struct in `src/dispatch` may hold.
const MAX_DISPATCH_FIELDS: usize = 8;

#[test]
fn no_import_cycles_between_files_of_src() {
    let files = source_files();
    assert_no_cycles(&import_graph(&files), "files");
}

/// The layering of `src/lib.rs` ("lower layers never name upper ones"): the same graph with
/// each file folded into its top-level module (`transport/tcp.rs` is `transport`).
#[test]
fn no_import_cycles_between_modules_of_src() {
    let files = source_files();
    let top = |rel: &str| {
        rel.split('/')
            .next()
            .unwrap_or(rel)
            .trim_end_matches(".rs")
            .to_owned()
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in import_graph(&files) {
        let from = top(&from);
        let edges = graph.entry(from.clone()).or_default();
        edges.extend(targets.iter().map(|t| top(t)).filter(|t| *t != from));
    }
    assert_no_cycles(&graph, "modules");
}

#[test]
fn no_file_in_src_is_over_the_line_limit() {
    let mut long: Vec<String> = source_files()
        .iter()
        .filter(|f| !PARSER_FILES.contains(&f.rel.as_str()) && !f.is_test())
        .filter(|f| f.text.lines().count() > MAX_LINES)
        .map(|f| format!("  src/{} ({} lines)", f.rel, f.text.lines().count()))
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_struct_in_dispatch_has_more_than_eight_fields() {
    let mut wide = Vec::new();
    for file in source_files()
        .iter()
        .filter(|f| f.rel.starts_with("dispatch/"))
    {
        for (name, fields) in structs(&strip(&file.text)) {
            if fields > MAX_DISPATCH_FIELDS {
                wide.push(format!("  src/{}: {name} has {fields} fields", file.rel));
            }
        }
    }
    assert!(
        wide.is_empty(),
        "structs in src/dispatch over {MAX_DISPATCH_FIELDS} fields:\n{}",
        wide.join("\n")
    );
}

/// The reader itself, on inputs whose answer is known: it must find a cycle where there is
/// one, so the rule above cannot pass by reading nothing.
#[test]
fn the_reader_finds_paths_cycles_and_fields() {
    let text = strip_test_items(&strip(
        r##"use crate::a::{b::{C, self}, d as e}; // crate::zz::Hidden
        fn f() { let s = "crate::yy::InString"; let c = '{'; crate::q::r(); super::sib::X; }
        #[cfg(test)]
        mod tests { use crate::tt::T; }
        struct S<'a> { a: u8, b: Vec<(u8, u16)>, pub(crate) c: fn(u8) -> u8, d: &'a str }
        "##,
    ));
    let paths = paths(&text);
    let flat: Vec<String> = paths
        .iter()
        .map(|(k, p)| format!("{k}:{}", p.join("::")))
        .collect();
    assert_eq!(
        flat,
        [
            "crate:a::b::C",
            "crate:a::b",
            "crate:a::d",
            "crate:q::r",
            "super:sib::X"
        ]
    );
    assert_eq!(structs(&text), [("S".to_owned(), 4)]);

    let mut graph = BTreeMap::new();
    graph.insert("a.rs".to_owned(), BTreeSet::from(["b.rs".to_owned()]));
    graph.insert("b.rs".to_owned(), BTreeSet::from(["c.rs".to_owned()]));
    graph.insert("c.rs".to_owned(), BTreeSet::from(["a.rs".to_owned()]));
    graph.insert("d.rs".to_owned(), BTreeSet::from(["a.rs".to_owned()]));
    assert_eq!(cycles(&graph), [vec!["a.rs", "b.rs", "c.rs", "a.rs"]]);
}

/// Fails with every cycle of `graph` (between `what` of src/), one a line.
fn assert_no_cycles(graph: &BTreeMap<String, BTreeSet<String>>, what: &str) {
    let cycles = cycles(graph);
    assert!(
        cycles.is_empty(),
        "import cycles between {what} of src/:\n{}",
        cycles
            .iter()
            .map(|c| format!("  {}", c.join(" -> ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

struct SourceFile {
    /// Path under `src/`, with `/`.
    rel: String,
    /// The module path the file defines (`sip/mod.rs` and `sip.rs` are `["sip"]`).
    module: Vec<String>,
    text: String,
}

impl SourceFile {
    fn is_test(&self) -> bool {
        self.rel.ends_with("/tests.rs")
            || self.rel == "tests.rs"
            || self.rel.starts_with("tests/")
            || self.rel.contains("/tests/")
    }
}

fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    let mut files: Vec<SourceFile> = paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("readable source file");
            let mut module: Vec<String> = rel
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_owned)
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            SourceFile { rel, module, text }
        })
        .collect();
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    assert!(
        files.len() > 10,
        "found the sources under {}",
        root.display()
    );
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// File → files it names through `crate::` or `super::` paths. `main.rs` is the binary
/// crate (it names the library as `sipward::`) and stays out.
fn import_graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<&[String], &str> = files
        .iter()
        .filter(|f| f.rel != "main.rs")
        .map(|f| (f.module.as_slice(), f.rel.as_str()))
        .collect();
    let mut graph = BTreeMap::new();
    for file in files.iter().filter(|f| f.rel != "main.rs" && !f.is_test()) {
        let mut edges = BTreeSet::new();
        for (kind, path) in paths(&strip_test_items(&strip(&file.text))) {
            let mut full: Vec<String> = match kind {
                Kind::Crate => Vec::new(),
                Kind::Super => {
                    let mut parent = file.module.clone();
                    parent.pop();
                    parent
                }
            };
            let mut rest = path.as_slice();
            while let [first, tail @ ..] = rest {
                if first != "super" {
                    break;
                }
                full.pop();
                rest = tail;
            }
            full.extend(rest.iter().cloned());
            // The longest prefix of the path that is a file's module.
            let target = (0..=full.len())
                .rev()
                .find_map(|n| by_module.get(&full[..n]).copied());
            if let Some(target) = target {
                if target != file.rel {
                    edges.insert(target.to_owned());
                }
            }
        }
        graph.insert(file.rel.clone(), edges);
    }
    graph
}

/// Every elementary cycle found by a depth-first search, one per strongly connected group,
/// each as `a -> b -> … -> a`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components, then one concrete cycle inside each.
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        groups: Vec<BTreeSet<&'g str>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.insert(w);
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.groups.push(group);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    let mut out = Vec::new();
    for group in &t.groups {
        // Breadth-first from the group's first file back to itself, inside the group.
        let start = *group.iter().next().expect("non-empty group");
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut end = None;
        while let Some(v) = queue.pop_front() {
            for w in graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !group.contains(w) {
                    continue;
                }
                if w == start {
                    end = Some(v);
                    break;
                }
                if !previous.contains_key(w) {
                    previous.insert(w, v);
                    queue.push_back(w);
                }
            }
            if end.is_some() {
                break;
            }
        }
        let mut cycle = vec![start.to_owned()];
        let mut v = end.expect("a group of two or more has a cycle through its start");
        while v != start {
            cycle.push(v.to_owned());
            v = previous[v];
        }
        cycle.push(start.to_owned());
        cycle.reverse();
        out.push(cycle);
    }
    out.sort();
    out
}

/// The text with comments, string literals and char literals blanked (newlines kept).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        blank(&mut out, c[i]);
                        i += 1;
                    }
                }
            }
            'r' if (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
                && !c
                    .get(i.wrapping_sub(1))
                    .is_some_and(|p| p.is_alphanumeric() || *p == '_') =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    blank(&mut out, c[j]);
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    if let Some(&ch) = c.get(i) {
                        blank(&mut out, ch);
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a).
                if c.get(i + 1) == Some(&'\\') {
                    let mut j = i + 2;
                    while j < c.len() && c[j] != '\'' {
                        j += 1;
                    }
                    i = j + 1;
                    out.push_str("' '");
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                    out.push_str("' '");
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// The text without items under `#[cfg(test)]` (up to the item's `;` or its braced body).
fn strip_test_items(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let bytes = item.as_bytes();
        let mut end = item.len();
        let mut depth = 0usize;
        for (i, b) in bytes.iter().enumerate() {
            match b {
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Crate,
    Super,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Crate => "crate",
            Kind::Super => "super",
        })
    }
}

/// Every `crate::…` and `super::…` path in stripped text, use-tree groups expanded (a
/// `super::super::x` path keeps its inner `super`s).
fn paths(text: &str) -> Vec<(Kind, Vec<String>)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let word_start = i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        let kind = if !word_start {
            None
        } else if starts_with(&c, i, "crate::") {
            Some((Kind::Crate, 7))
        } else if starts_with(&c, i, "super::") && !(i > 0 && c[i - 1] == ':') {
            Some((Kind::Super, 7))
        } else {
            None
        };
        match kind {
            Some((kind, len)) => {
                let mut j = i + len;
                let mut found = Vec::new();
                tree(&c, &mut j, Vec::new(), &mut found);
                out.extend(found.into_iter().map(|p| (kind, p)));
                i = j.max(i + 1);
            }
            None => i += 1,
        }
    }
    out
}

fn starts_with(c: &[char], at: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, ch)| c.get(at + k) == Some(&ch))
}

fn skip_ws(c: &[char], j: &mut usize) {
    while *j < c.len() && c[*j].is_whitespace() {
        *j += 1;
    }
}

fn ident(c: &[char], j: &mut usize) -> Option<String> {
    let start = *j;
    while *j < c.len() && (c[*j].is_alphanumeric() || c[*j] == '_') {
        *j += 1;
    }
    (*j > start).then(|| c[start..*j].iter().collect())
}

/// One use tree at `j` under `prefix`: `a::b`, `a::{…}`, `a::*`, `self`, `a as b`.
fn tree(c: &[char], j: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        skip_ws(c, j);
        if c.get(*j) == Some(&'{') {
            *j += 1;
            loop {
                skip_ws(c, j);
                match c.get(*j) {
                    Some('}') => {
                        *j += 1;
                        return;
                    }
                    Some(',') => *j += 1,
                    None => return,
                    _ => {
                        let before = *j;
                        tree(c, j, path.clone(), out);
                        if *j == before {
                            *j += 1;
                        }
                    }
                }
            }
        }
        if c.get(*j) == Some(&'*') {
            *j += 1;
            out.push(path);
            return;
        }
        match ident(c, j) {
            Some(word) if word == "self" => {}
            Some(word) => path.push(word),
            None => {
                if !path.is_empty() {
                    out.push(path);
                }
                return;
            }
        }
        if starts_with(c, *j, "::") {
            *j += 2;
            continue;
        }
        out.push(path);
        // `as alias` adds nothing.
        skip_ws(c, j);
        if starts_with(c, *j, "as ") {
            *j += 3;
            skip_ws(c, j);
            ident(c, j);
        }
        return;
    }
}

/// `(name, field count)` of each struct with named or tuple fields in stripped text.
fn structs(text: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let word_start = i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        if !(word_start && starts_with(&c, i, "struct ")) {
            i += 1;
            continue;
        }
        let mut j = i + 7;
        skip_ws(&c, &mut j);
        let Some(name) = ident(&c, &mut j) else {
            i += 1;
            continue;
        };
        // Skip generics and a where clause up to the body.
        while j < c.len() && !matches!(c[j], '{' | '(' | ';') {
            j += 1;
        }
        if j >= c.len() || c[j] == ';' {
            out.push((name, 0));
            i = j;
            continue;
        }
        let close = if c[j] == '{' { '}' } else { ')' };
        j += 1;
        let mut depth = 0usize;
        let mut fields = 0;
        let mut segment_has_text = false;
        while j < c.len() {
            let ch = c[j];
            match ch {
                '-' if c.get(j + 1) == Some(&'>') => j += 1,
                '(' | '[' | '{' | '<' => depth += 1,
                ')' | ']' | '}' | '>' if depth > 0 => depth -= 1,
                _ if ch == close && depth == 0 => break,
                ',' if depth == 0 => {
                    if segment_has_text {
                        fields += 1;
                    }
                    segment_has_text = false;
                }
                _ => {}
            }
            if !ch.is_whitespace() && ch != ',' {
                segment_has_text = true;
            }
            j += 1;
        }
        if segment_has_text {
            fields += 1;
        }
        out.push((name, fields));
        i = j;
    }
    out
}
