//! The bounded reader of the audit file for `GET /admin/v1/audit`: from a cursor (a byte
//! offset the previous page returned), the lines that match every given filter, at most
//! `limit` of them, scanning at most [`MAX_SCAN_BYTES`] per request; lines longer than
//! [`MAX_LINE_BYTES`] or not JSON are skipped. Cost per request: one file open and at most
//! `MAX_SCAN_BYTES` read.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::Path;

use serde_json::Value;

pub const MAX_SCAN_BYTES: u64 = 4 * 1024 * 1024;
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most lines in one page.
pub const MAX_PAGE: usize = 1000;

/// What a page asks for: each `Some` filter must equal the line's field.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    pub target: Option<String>,
    pub cursor: u64,
    pub limit: usize,
}

#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// Where the next page starts; `None` at the end of the file.
    pub next_cursor: Option<u64>,
}

pub fn read(path: &Path, q: &Query) -> io::Result<Page> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if q.cursor >= len {
        return Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        });
    }
    file.seek(SeekFrom::Start(q.cursor))?;
    let mut reader = BufReader::new(file).take(MAX_SCAN_BYTES);
    let limit = q.limit.clamp(1, MAX_PAGE);
    let mut items = Vec::new();
    let mut pos = q.cursor;
    let mut line = Vec::new();
    loop {
        if items.len() >= limit {
            return Ok(Page {
                items,
                next_cursor: Some(pos),
            });
        }
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            // The end of the file, or the scan bound exactly at a line's end.
            return Ok(Page {
                items,
                next_cursor: (pos < len).then_some(pos),
            });
        }
        if line.last() != Some(&b'\n') {
            // Cut by the scan bound (go on from this line), or a last line still being
            // written (the end for now).
            let cut = pos + (n as u64) < len;
            return Ok(Page {
                items,
                next_cursor: cut.then_some(pos),
            });
        }
        pos += n as u64;
        if n > MAX_LINE_BYTES {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let field_is = |name: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| v.get(name).and_then(Value::as_str) == Some(w))
        };
        if field_is("action", &q.action)
            && field_is("actor", &q.actor)
            && field_is("outcome", &q.outcome)
            && field_is("target", &q.target)
        {
            items.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Event};

    #[test]
    fn pages_follow_the_cursor_and_filters_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..5 {
            let action = if i % 2 == 0 { "a" } else { "b" };
            log.record(Event::new("admin-token", action, "success").target(format!("t{i}")));
        }
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut q = Query {
            limit: 2,
            ..Query::default()
        };
        let mut seen = Vec::new();
        loop {
            let p = read(&path, &q).unwrap();
            seen.extend(
                p.items
                    .iter()
                    .map(|v| v["target"].as_str().unwrap().to_owned()),
            );
            match p.next_cursor {
                Some(c) => q.cursor = c,
                None => break,
            }
        }
        assert_eq!(seen, ["t0", "t1", "t2", "t3", "t4"]);
        let p = read(
            &path,
            &Query {
                action: Some("b".into()),
                limit: 10,
                ..Query::default()
            },
        )
        .unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.next_cursor, None);
        // Rotated away: reopen writes a new file.
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        log.reopen().unwrap();
        log.record(Event::new("scim:x", "c", "success"));
        let p = read(
            &path,
            &Query {
                limit: 10,
                ..Query::default()
            },
        )
        .unwrap();
        assert_eq!(p.items.len(), 1);
    }
}
