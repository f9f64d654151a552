//! SQLite device store: one connection behind a mutex (calls are serialised, which also makes
//! `issue` atomic with the device cap), WAL journal, `synchronous = FULL` so an issued
//! credential is on disk before the API answers. `:memory:` for development and tests. A new
//! database file is created 0600 (`fsutil::ensure_private`).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{DeviceRecord, DeviceStore, Generation, IssueOutcome, IssueRequest, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    username        TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    iss             TEXT NOT NULL,
    sub             TEXT NOT NULL,
    aor             TEXT NOT NULL,
    realm           TEXT NOT NULL,
    gen             INTEGER NOT NULL,
    kid             TEXT NOT NULL,
    expires_at      INTEGER NOT NULL,
    prev_gen        INTEGER,
    prev_kid        TEXT,
    prev_expires_at INTEGER,
    created         INTEGER NOT NULL,
    revoked         INTEGER,
    last_register   INTEGER,
    name            TEXT,
    platform        TEXT
);
CREATE INDEX IF NOT EXISTS devices_user ON devices (iss, sub, device_id);
CREATE INDEX IF NOT EXISTS devices_aor ON devices (aor);
CREATE TABLE IF NOT EXISTS aor_revocations (
    aor            TEXT PRIMARY KEY,
    revoked_before INTEGER NOT NULL
);
PRAGMA user_version = 1;
";

const COLUMNS: &str = "username, device_id, iss, sub, aor, realm, gen, kid, expires_at, \
     prev_gen, prev_kid, prev_expires_at, created, revoked, last_register, name, platform";

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`; `None` = in memory.
    pub fn open(path: Option<&Path>) -> Result<SqliteStore, StoreError> {
        let conn = match path {
            Some(p) => {
                // Owner-only before SQLite opens it; the -wal and -shm files inherit its mode.
                crate::fsutil::ensure_private(p)
                    .map_err(|e| StoreError::Backend(format!("creating {}: {e}", p.display())))?;
                Connection::open(p)?
            }
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        if path.is_some() {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Backend(format!(
                    "journal_mode is {mode}, WAL was asked for"
                )));
            }
            conn.execute_batch("PRAGMA synchronous = FULL;")?;
        }
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("connection mutex poisoned".into()))?;
        f(&mut conn)
    }
}

fn u64_col(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(row.get::<_, i64>(i)?.max(0) as u64)
}

fn opt_u64(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(row.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
}

fn record(row: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let previous = match (
        row.get::<_, Option<i64>>(9)?,
        row.get::<_, Option<String>>(10)?,
        opt_u64(row, 11)?,
    ) {
        (Some(gen), Some(kid), Some(expires_at)) => Some(Generation {
            gen: gen.max(0) as u32,
            kid,
            expires_at,
        }),
        _ => None,
    };
    Ok(DeviceRecord {
        username: row.get(0)?,
        device_id: row.get(1)?,
        iss: row.get(2)?,
        sub: row.get(3)?,
        aor: row.get(4)?,
        realm: row.get(5)?,
        current: Generation {
            gen: row.get::<_, i64>(6)?.max(0) as u32,
            kid: row.get(7)?,
            expires_at: u64_col(row, 8)?,
        },
        previous,
        created: u64_col(row, 12)?,
        revoked: opt_u64(row, 13)?,
        last_register: opt_u64(row, 14)?,
        name: row.get(15)?,
        platform: row.get(16)?,
    })
}

fn save(conn: &Connection, r: &DeviceRecord) -> Result<(), StoreError> {
    let prev = r.previous.as_ref();
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO devices ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        params![
            r.username,
            r.device_id,
            r.iss,
            r.sub,
            r.aor,
            r.realm,
            i64::from(r.current.gen),
            r.current.kid,
            r.current.expires_at as i64,
            prev.map(|p| i64::from(p.gen)),
            prev.map(|p| p.kid.clone()),
            prev.map(|p| p.expires_at as i64),
            r.created as i64,
            r.revoked.map(|v| v as i64),
            r.last_register.map(|v| v as i64),
            r.name,
            r.platform,
        ],
    )?;
    Ok(())
}

fn select(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE {filter}"))?;
    let rows = stmt.query_map(args, record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl DeviceStore for SqliteStore {
    fn load_active(&self, now: u64) -> Result<Vec<DeviceRecord>, StoreError> {
        self.with(|c| {
            select(
                c,
                "revoked IS NULL AND (expires_at > ?1 OR prev_expires_at > ?1)",
                params![now as i64],
            )
        })
    }

    fn user_devices(&self, iss: &str, sub: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        self.with(|c| {
            select(
                c,
                "iss = ?1 AND sub = ?2 AND revoked IS NULL ORDER BY created",
                params![iss, sub],
            )
        })
    }

    fn issue(&self, req: &IssueRequest) -> Result<IssueOutcome, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let taken = tx
                .query_row(
                    "SELECT 1 FROM devices WHERE aor = ?1 AND revoked IS NULL \
                     AND (iss != ?2 OR sub != ?3) LIMIT 1",
                    params![req.aor, req.iss, req.sub],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if taken {
                return Ok(IssueOutcome::AorTaken);
            }
            let existing = select(
                &tx,
                "iss = ?1 AND sub = ?2 AND device_id = ?3 AND revoked IS NULL",
                params![req.iss, req.sub, req.device_id],
            )?
            .into_iter()
            .next();
            let outcome = match existing {
                Some(mut rec) => {
                    let old = rec.current.clone();
                    rec.previous = (old.expires_at > req.now).then_some(old);
                    rec.current = Generation {
                        gen: rec.current.gen.saturating_add(1),
                        kid: req.kid.clone(),
                        expires_at: req.expires_at,
                    };
                    // The token maps to this AoR now (a renamed user keeps the device).
                    rec.aor = req.aor.clone();
                    rec.realm = req.realm.clone();
                    if req.name.is_some() {
                        rec.name = req.name.clone();
                    }
                    if req.platform.is_some() {
                        rec.platform = req.platform.clone();
                    }
                    save(&tx, &rec)?;
                    IssueOutcome::Renewed(rec)
                }
                None => {
                    let active = select(
                        &tx,
                        "iss = ?1 AND sub = ?2 AND revoked IS NULL \
                         AND (expires_at > ?3 OR prev_expires_at > ?3)",
                        params![req.iss, req.sub, req.now as i64],
                    )?
                    .len();
                    if active >= req.max_devices {
                        return Ok(IssueOutcome::DeviceLimitReached);
                    }
                    let rec = DeviceRecord {
                        username: req.new_username.clone(),
                        device_id: req.device_id.clone(),
                        iss: req.iss.clone(),
                        sub: req.sub.clone(),
                        aor: req.aor.clone(),
                        realm: req.realm.clone(),
                        current: Generation {
                            gen: 1,
                            kid: req.kid.clone(),
                            expires_at: req.expires_at,
                        },
                        previous: None,
                        created: req.now,
                        revoked: None,
                        last_register: None,
                        name: req.name.clone(),
                        platform: req.platform.clone(),
                    };
                    save(&tx, &rec)?;
                    IssueOutcome::Created(rec)
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    fn revoke_device(
        &self,
        iss: &str,
        sub: &str,
        device_id: &str,
        now: u64,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let found = select(
                &tx,
                "iss = ?1 AND sub = ?2 AND device_id = ?3 AND revoked IS NULL",
                params![iss, sub, device_id],
            )?;
            tx.execute(
                "UPDATE devices SET revoked = ?4 \
                 WHERE iss = ?1 AND sub = ?2 AND device_id = ?3 AND revoked IS NULL",
                params![iss, sub, device_id, now as i64],
            )?;
            tx.commit()?;
            Ok(found.into_iter().next())
        })
    }

    fn revoke_aor(&self, aor: &str, now: u64) -> Result<Vec<DeviceRecord>, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let found = select(&tx, "aor = ?1 AND revoked IS NULL", params![aor])?;
            tx.execute(
                "UPDATE devices SET revoked = ?2 WHERE aor = ?1 AND revoked IS NULL",
                params![aor, now as i64],
            )?;
            tx.execute(
                "INSERT INTO aor_revocations (aor, revoked_before) VALUES (?1, ?2) \
                 ON CONFLICT (aor) DO UPDATE SET revoked_before = excluded.revoked_before",
                params![aor, now as i64],
            )?;
            tx.commit()?;
            Ok(found)
        })
    }

    fn aor_revoked_before(&self, aor: &str) -> Result<Option<u64>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT revoked_before FROM aor_revocations WHERE aor = ?1",
                params![aor],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v.max(0) as u64))
        })
    }

    fn record_register(&self, username: &str, gen: u32, at: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE devices SET last_register = ?2, \
                 prev_gen = CASE WHEN gen = ?3 THEN NULL ELSE prev_gen END, \
                 prev_kid = CASE WHEN gen = ?3 THEN NULL ELSE prev_kid END, \
                 prev_expires_at = CASE WHEN gen = ?3 THEN NULL ELSE prev_expires_at END \
                 WHERE username = ?1",
                params![username, at as i64, i64::from(gen)],
            )?;
            Ok(())
        })
    }

    fn device(&self, username: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.with(|c| {
            Ok(select(c, "username = ?1", params![username])?
                .into_iter()
                .next())
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(device: &str, username: &str, now: u64) -> IssueRequest {
        IssueRequest {
            iss: "https://idp.test".into(),
            sub: "alice-sub".into(),
            device_id: device.into(),
            aor: "sip:alice@example.test".into(),
            realm: "example.test".into(),
            new_username: username.into(),
            kid: "k1".into(),
            expires_at: now + 100,
            name: Some("Laptop".into()),
            platform: None,
            now,
            max_devices: 2,
        }
    }

    #[test]
    fn issue_renew_cap_and_revoke() {
        let store = SqliteStore::open(None).unwrap();
        let IssueOutcome::Created(first) = store.issue(&request("a", "d-one", 1000)).unwrap()
        else {
            panic!("created")
        };
        assert_eq!(first.current.gen, 1);
        let IssueOutcome::Renewed(renewed) = store.issue(&request("a", "d-other", 1010)).unwrap()
        else {
            panic!("renewed")
        };
        assert_eq!(renewed.username, "d-one");
        assert_eq!(renewed.current.gen, 2);
        assert_eq!(renewed.previous.as_ref().map(|p| p.gen), Some(1));
        assert!(matches!(
            store.issue(&request("b", "d-two", 1020)).unwrap(),
            IssueOutcome::Created(_)
        ));
        assert_eq!(
            store.issue(&request("c", "d-three", 1030)).unwrap(),
            IssueOutcome::DeviceLimitReached
        );
        store.record_register("d-one", 2, 1040).unwrap();
        let active = store.load_active(1040).unwrap();
        let one = active.iter().find(|r| r.username == "d-one").unwrap();
        assert_eq!(one.previous, None);
        assert_eq!(one.last_register, Some(1040));
        let revoked = store
            .revoke_device("https://idp.test", "alice-sub", "a", 1050)
            .unwrap();
        assert_eq!(revoked.map(|r| r.username), Some("d-one".into()));
        assert_eq!(
            store
                .user_devices("https://idp.test", "alice-sub")
                .unwrap()
                .len(),
            1
        );
        let all = store.revoke_aor("sip:alice@example.test", 1060).unwrap();
        assert_eq!(all.len(), 1);
        assert!(store.load_active(1060).unwrap().is_empty());
        assert_eq!(
            store.aor_revoked_before("sip:alice@example.test").unwrap(),
            Some(1060)
        );
    }

    #[test]
    fn an_aor_belongs_to_one_subject_until_it_is_revoked() {
        let store = SqliteStore::open(None).unwrap();
        assert!(matches!(
            store.issue(&request("a", "d-one", 1000)).unwrap(),
            IssueOutcome::Created(_)
        ));
        let other = IssueRequest {
            sub: "another-sub".into(),
            ..request("b", "d-two", 1010)
        };
        assert_eq!(store.issue(&other).unwrap(), IssueOutcome::AorTaken);
        // Expired but not revoked still holds the AoR.
        let later = IssueRequest {
            now: 5000,
            expires_at: 5100,
            ..other.clone()
        };
        assert_eq!(store.issue(&later).unwrap(), IssueOutcome::AorTaken);
        store.revoke_aor("sip:alice@example.test", 5000).unwrap();
        assert!(matches!(
            store.issue(&later).unwrap(),
            IssueOutcome::Created(_)
        ));
        assert_eq!(
            store.issue(&request("a", "d-three", 5010)).unwrap(),
            IssueOutcome::AorTaken
        );
    }
}
