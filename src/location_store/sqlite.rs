//! The SQLite location store: one table of bindings keyed by the binding's id, WAL journal,
//! `synchronous = FULL`.
//!
//! Durability: in WAL mode with `synchronous = FULL` SQLite fsyncs the WAL at every commit,
//! so a committed batch survives a process crash and a power loss. (`NORMAL` would survive
//! `kill -9` too, since the WAL is in the OS page cache, but not a power loss; the fsync is
//! paid once per batch, not per REGISTER, thanks to group commit.) A torn write leaves an
//! incomplete WAL frame that SQLite ignores at the next open: the store is never corrupted,
//! only the unacknowledged tail is lost.
//!
//! The file is created mode 0600 (it names users, devices and addresses; SQLite gives the
//! `-wal` and `-shm` files the same mode). The schema carries a version in `schema_version`;
//! an unknown version is refused with a one-line error rather than guessed at.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::{LocationStore, LocationStoreError, WallClock};
use crate::registrar::{Aor, BindingChange, BindingRecord, Transport};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
CREATE TABLE bindings (
    id          INTEGER PRIMARY KEY,
    aor         TEXT NOT NULL,
    uri         TEXT NOT NULL,
    uri_key     TEXT,
    params      TEXT NOT NULL,
    instance    TEXT,
    reg_id      INTEGER,
    q           INTEGER,
    call_id     TEXT NOT NULL,
    cseq        INTEGER NOT NULL,
    user_agent  TEXT,
    credential  TEXT,
    path        TEXT,
    source      TEXT NOT NULL,
    transport   TEXT NOT NULL,
    granted     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
";

/// The index on `expires_at` of stores made before it was dropped: a REGISTER moves its
/// binding's expiry, so the index cost every REGISTER about two more pages written (and
/// checkpointed) per transaction, for the benefit of a purge that runs every 10 s. The
/// purge walks the table in slices instead ([`PURGE_SCAN`]).
const DROP_OLD_INDEX: &str = "DROP INDEX IF EXISTS bindings_expires_at";

/// SQLite's page cache for this connection, KiB (its default: 2 000): the pages a REGISTER's
/// row update reads stay in memory instead of being read back from the WAL or the file.
const CACHE_KIB: u32 = 16 * 1024;
/// Rows the writer's periodic purge examines per call, in rowid order from where the last
/// call stopped (wrapping at the end): a bounded stall of the writer (a few ms per 10 000
/// rows) instead of an index every REGISTER pays for. A million bindings are swept in
/// 20 purges (every `PURGE_EVERY`, 10 s).
pub const PURGE_SCAN: usize = 50_000;

const COLUMNS: &str = "id, aor, uri, uri_key, params, instance, reg_id, q, call_id, cseq, \
     user_agent, credential, path, source, transport, granted, expires_at";

const PUT: &str = "INSERT OR REPLACE INTO bindings (id, aor, uri, uri_key, params, instance, \
     reg_id, q, call_id, cseq, user_agent, credential, path, source, transport, granted, \
     expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
/// A [`BindingChange::Renew`]: the columns a re-REGISTER with a new Call-ID or source port
/// changes, nothing else (no row deleted and inserted again, as `REPLACE` does).
const RENEW: &str = "UPDATE bindings SET call_id = ?2, cseq = ?3, source = ?4, granted = ?5, \
     expires_at = ?6 WHERE id = ?1";
const REFRESH: &str = "UPDATE bindings SET cseq = ?2, granted = ?3, expires_at = ?4 WHERE id = ?1";
const REMOVE: &str = "DELETE FROM bindings WHERE id = ?1";

/// What `sipward store check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCheck {
    /// `PRAGMA integrity_check`: "ok", or the first problems found.
    pub integrity: String,
    pub schema_version: i64,
    pub rows: u64,
    /// Rows whose expiry lies in the future.
    pub live: u64,
    pub bytes: u64,
}

pub struct SqliteLocationStore {
    conn: Connection,
    path: std::path::PathBuf,
    /// Where the next purge slice starts: rows with a larger id ([`PURGE_SCAN`]).
    purge_after: i64,
}

impl SqliteLocationStore {
    /// Opens the store at `path`, creating the file (mode 0600) and the schema if it does not
    /// exist; refuses a file with another schema version.
    pub fn open(path: &Path) -> Result<SqliteLocationStore, LocationStoreError> {
        crate::fsutil::make_private(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LocationStoreError::Backend(format!(
                "journal_mode is {mode}, WAL was asked for"
            )));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = FULL; PRAGMA cache_size = -{CACHE_KIB};"
        ))?;
        ensure_schema(&conn)?;
        conn.execute_batch(DROP_OLD_INDEX)?;
        Ok(SqliteLocationStore {
            conn,
            path: path.to_owned(),
            purge_after: -1,
        })
    }

    /// Deletes every binding whose expiry is at or before `before_ms` (Unix ms), in
    /// transactions of at most `batch` rows: the start-up purge. Returns how many.
    pub fn purge_all_expired(
        &mut self,
        before_ms: u64,
        batch: usize,
    ) -> Result<usize, LocationStoreError> {
        self.purge_after = -1;
        let mut total = 0;
        loop {
            let (deleted, wrapped) = self.purge_slice(before_ms, batch, usize::MAX)?;
            total += deleted;
            if wrapped {
                return Ok(total);
            }
        }
    }

    /// One purge slice: examines at most `scan` rows after `purge_after` in rowid order and
    /// deletes the expired ones among them, at most `max`, in one transaction. Returns how
    /// many it deleted, and whether it reached the end of the table (the next slice starts
    /// from the beginning again).
    pub(super) fn purge_slice(
        &mut self,
        before_ms: u64,
        max: usize,
        scan: usize,
    ) -> Result<(usize, bool), LocationStoreError> {
        let tx = self.conn.transaction()?;
        let (doomed, next) = {
            let mut rows_after = tx.prepare_cached(
                "SELECT id, expires_at FROM bindings WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut rows = rows_after.query(params![self.purge_after, to_i64(scan as u64)])?;
            let (mut doomed, mut seen, mut last) = (Vec::new(), 0usize, None);
            while doomed.len() < max {
                let Some(row) = rows.next()? else { break };
                let (id, expires_at): (i64, i64) = (row.get(0)?, row.get(1)?);
                seen += 1;
                last = Some(id);
                if expires_at <= to_i64(before_ms) {
                    doomed.push(id);
                }
            }
            // Stopped short of `scan` rows without reaching `max`: the end of the table.
            let wrapped = doomed.len() < max && seen < scan;
            (doomed, if wrapped { None } else { last })
        };
        {
            let mut remove = tx.prepare_cached(REMOVE)?;
            for id in &doomed {
                remove.execute([id])?;
            }
        }
        tx.commit()?;
        self.purge_after = next.unwrap_or(-1);
        Ok((doomed.len(), next.is_none()))
    }

    /// Checks an existing store without changing it (`sipward store check`).
    pub fn check(path: &Path, now_ms: u64) -> Result<StoreCheck, LocationStoreError> {
        if !path.exists() {
            return Err(LocationStoreError::Backend(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let schema_version = version(&conn)?.ok_or(LocationStoreError::NotAStore)?;
        if schema_version != SCHEMA_VERSION {
            return Err(LocationStoreError::UnknownSchema {
                found: schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        let mut problems = Vec::new();
        let mut stmt = conn.prepare("PRAGMA integrity_check(10)")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            problems.push(row.get::<_, String>(0)?);
        }
        let count = |sql: &str| -> Result<u64, LocationStoreError> {
            let n: i64 = conn.query_row(sql, [to_i64(now_ms)], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        };
        Ok(StoreCheck {
            integrity: problems.join("; "),
            schema_version,
            rows: count("SELECT count(*) FROM bindings WHERE ?1 IS NOT NULL")?,
            live: count("SELECT count(*) FROM bindings WHERE expires_at > ?1")?,
            bytes: file_bytes(path),
        })
    }

    /// Copies the store to `target` with SQLite's online backup API: safe while sipward runs
    /// and writes (the copy is one consistent snapshot). The copy is made mode 0600.
    pub fn backup(path: &Path, target: &Path) -> Result<(), LocationStoreError> {
        if !path.exists() {
            return Err(LocationStoreError::Backend(format!(
                "{} does not exist",
                path.display()
            )));
        }
        if target.exists() {
            return Err(LocationStoreError::Backend(format!(
                "{} exists already; give a new file",
                target.display()
            )));
        }
        let source = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        version(&source)?.ok_or(LocationStoreError::NotAStore)?;
        crate::fsutil::make_private(target)?;
        source.backup(rusqlite::MAIN_DB, target, None)?;
        Ok(())
    }
}

/// The schema version, or `None` for a file without the version table.
fn version(conn: &Connection) -> Result<Option<i64>, LocationStoreError> {
    let has_table: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if has_table.is_none() {
        return Ok(None);
    }
    let v: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(Some(v.unwrap_or(0)))
}

/// Creates the schema in an empty file; accepts version [`SCHEMA_VERSION`]; refuses anything
/// else (there is no older version to migrate from yet: version 1 is the first).
fn ensure_schema(conn: &Connection) -> Result<(), LocationStoreError> {
    match version(conn)? {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(LocationStoreError::UnknownSchema {
            found,
            supported: SCHEMA_VERSION,
        }),
        None => {
            let tables: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            if tables > 0 {
                return Err(LocationStoreError::NotAStore);
            }
            conn.execute_batch(&format!("BEGIN; {SCHEMA} COMMIT;"))?;
            Ok(())
        }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn file_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

fn record(row: &Row<'_>, clock: &WallClock) -> rusqlite::Result<Option<BindingRecord>> {
    let aor: String = row.get(1)?;
    let source: String = row.get(13)?;
    let transport: String = row.get(14)?;
    let path: Option<String> = row.get(12)?;
    let (Some(aor), Ok(source), Some(transport)) = (
        Aor::parse(&aor),
        source.parse(),
        Transport::parse(&transport),
    ) else {
        return Ok(None);
    };
    let path = match path {
        None => Vec::new(),
        Some(text) => match serde_json::from_str::<Vec<String>>(&text) {
            Ok(p) => p,
            Err(_) => return Ok(None),
        },
    };
    let small = |i: usize| -> rusqlite::Result<Option<u32>> {
        Ok(row
            .get::<_, Option<i64>>(i)?
            .and_then(|v| u32::try_from(v).ok()))
    };
    let expires_at: i64 = row.get(16)?;
    Ok(Some(BindingRecord {
        id: row.get::<_, i64>(0)?.max(0) as u64,
        aor,
        uri: row.get(2)?,
        uri_key: row.get(3)?,
        params: row.get(4)?,
        instance: row.get(5)?,
        reg_id: small(6)?,
        q: small(7)?.and_then(|q| u16::try_from(q).ok()),
        call_id: row.get(8)?,
        cseq: small(9)?.unwrap_or(0),
        user_agent: row.get(10)?,
        credential: row.get(11)?,
        path,
        source,
        transport,
        granted: small(15)?.unwrap_or(0),
        deadline: clock.to_instant(expires_at.max(0) as u64),
    }))
}

/// Writes the whole row of `r` (inserted, or replacing the row of the same id).
fn write_whole(
    put: &mut rusqlite::CachedStatement<'_>,
    r: &BindingRecord,
    clock: &WallClock,
) -> rusqlite::Result<()> {
    let path = if r.path.is_empty() {
        None
    } else {
        serde_json::to_string(&r.path).ok()
    };
    put.execute(params![
        to_i64(r.id),
        r.aor.as_str(),
        r.uri,
        r.uri_key,
        r.params,
        r.instance,
        r.reg_id,
        r.q,
        r.call_id,
        r.cseq,
        r.user_agent,
        r.credential,
        path,
        r.source.to_string(),
        r.transport.as_str(),
        r.granted,
        to_i64(clock.unix_ms(r.deadline)),
    ])?;
    Ok(())
}

impl LocationStore for SqliteLocationStore {
    fn load(&mut self, clock: &WallClock) -> Result<Vec<BindingRecord>, LocationStoreError> {
        let mut stmt = self.conn.prepare(&format!(
            // `+expires_at`: a full scan in rowid order, not one index lookup per row.
            "SELECT {COLUMNS} FROM bindings WHERE +expires_at > ?1"
        ))?;
        let mut rows = stmt.query([to_i64(clock.now_ms())])?;
        let (mut out, mut skipped) = (Vec::new(), 0usize);
        while let Some(row) = rows.next()? {
            match record(row, clock)? {
                Some(r) => out.push(r),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "location store: rows that do not parse were skipped"
            );
        }
        Ok(out)
    }

    fn commit(
        &mut self,
        changes: &[BindingChange],
        clock: &WallClock,
    ) -> Result<(), LocationStoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(PUT)?;
            let mut renew = tx.prepare_cached(RENEW)?;
            let mut refresh = tx.prepare_cached(REFRESH)?;
            let mut remove = tx.prepare_cached(REMOVE)?;
            for change in changes {
                match change {
                    BindingChange::Put(r) => write_whole(&mut put, r, clock)?,
                    BindingChange::Renew(r) => {
                        let updated = renew.execute(params![
                            to_i64(r.id),
                            r.call_id,
                            r.cseq,
                            r.source.to_string(),
                            r.granted,
                            to_i64(clock.unix_ms(r.deadline)),
                        ])?;
                        // Not on disk (a put whose transaction failed): the whole row.
                        if updated == 0 {
                            write_whole(&mut put, r, clock)?;
                        }
                    }
                    BindingChange::Refresh {
                        id,
                        cseq,
                        granted,
                        deadline,
                    } => {
                        refresh.execute(params![
                            to_i64(*id),
                            cseq,
                            granted,
                            to_i64(clock.unix_ms(*deadline))
                        ])?;
                    }
                    BindingChange::Remove { id } => {
                        remove.execute([to_i64(*id)])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// One slice of [`PURGE_SCAN`] rows (see there): a round that deletes fewer than `max`
    /// may leave expired rows further on, for the next rounds.
    fn purge_expired(&mut self, before_ms: u64, max: usize) -> Result<usize, LocationStoreError> {
        Ok(self.purge_slice(before_ms, max, PURGE_SCAN)?.0)
    }

    fn size_bytes(&self) -> u64 {
        file_bytes(&self.path)
    }
}
