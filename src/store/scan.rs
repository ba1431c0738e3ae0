//! Streaming the audit chain's rows for verification ([`ChainStore::audit_scan`]): one query per
//! chunk of `seq`s, each row read borrowed from the driver into a recycled record, so that
//! reading a million records allocates per batch rather than several times per record.
//!
//! A SQLite file is read with rusqlite on a blocking thread, through the same libsqlite3 as
//! sqlx: sqlx would copy every value of every row and hand each row to another thread, which
//! costs more than hashing the chain. An in-memory database is only reachable through the pool.
//!
//! [`ChainStore::audit_scan`]: crate::audit::ChainStore::audit_scan

use std::path::Path;

use futures_util::TryStreamExt;
use rusqlite::OpenFlags;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::StoreError;
use super::sqlite::BUSY_TIMEOUT;
use crate::audit::scan::{overwrite_bytes, overwrite_optional, overwrite_text};
use crate::audit::{RecordSender, Scan, StoredAuditRecord};

/// Sends the records with `after_seq < seq <= upto` to `out` (see
/// [`ChainStore::audit_scan`](crate::audit::ChainStore::audit_scan)): read from `file` when the
/// database is one, else through `pool`.
pub(crate) async fn sqlite(
    pool: &SqlitePool,
    file: Option<&Path>,
    after_seq: i64,
    upto: i64,
    mut out: RecordSender,
) -> Result<(), StoreError> {
    match file {
        Some(file) => {
            let file = file.to_path_buf();
            tokio::task::spawn_blocking(move || {
                read_file(&file, after_seq, upto, CHUNK, &mut out)?;
                out.finish_blocking();
                Ok(())
            })
            .await
            .map_err(|err| StoreError::Unavailable(format!("the chain reader failed: {err}")))?
        }
        None => {
            read_pool(pool, after_seq, upto, CHUNK, &mut out).await?;
            out.finish().await;
            Ok(())
        }
    }
}

/// Reads the chain from the database file `path`, opened read-only, `chunk` records per query.
fn read_file(
    path: &Path,
    after_seq: i64,
    upto: i64,
    chunk: i64,
    out: &mut RecordSender,
) -> Result<(), StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(file_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(file_err)?;
    let mut select = conn.prepare(SELECT_RANGE).map_err(file_err)?;
    let mut after = after_seq;
    while after < upto {
        // Chunks bound how long one read holds its snapshot (and the WAL behind it).
        let end = after.saturating_add(chunk.max(1)).min(upto);
        let mut rows = select.query((after, end)).map_err(file_err)?;
        while let Some(row) = rows.next().map_err(file_err)? {
            let mut record = out.spare();
            overwrite_from_file_row(&mut record, row).map_err(file_err)?;
            if out.push_blocking(record) == Scan::Closed {
                return Ok(());
            }
        }
        after = end;
    }
    Ok(())
}

/// Reads the chain through the pool, `chunk` records per query.
async fn read_pool(
    pool: &SqlitePool,
    after_seq: i64,
    upto: i64,
    chunk: i64,
    out: &mut RecordSender,
) -> Result<(), StoreError> {
    let mut after = after_seq;
    while after < upto {
        let end = after.saturating_add(chunk.max(1)).min(upto);
        let mut rows = sqlx::query(SELECT_RANGE).bind(after).bind(end).fetch(pool);
        while let Some(row) = rows.try_next().await.map_err(sqlx_err)? {
            let mut record = out.spare();
            overwrite_from_row(&mut record, &row).map_err(sqlx_err)?;
            if out.push(record).await == Scan::Closed {
                return Ok(());
            }
        }
        after = end;
    }
    Ok(())
}

/// Overwrites every field of `record` with `row`'s, selected as in [`SELECT_RANGE`].
fn overwrite_from_file_row(
    record: &mut StoredAuditRecord,
    row: &rusqlite::Row<'_>,
) -> Result<(), rusqlite::Error> {
    record.seq = row.get_ref(0)?.as_i64()?;
    overwrite_bytes(&mut record.prev_hash, row.get_ref(1)?.as_blob()?);
    overwrite_bytes(&mut record.hash, row.get_ref(2)?.as_blob()?);
    overwrite_text(&mut record.canonical, row.get_ref(3)?.as_str()?);
    overwrite_text(&mut record.event, row.get_ref(4)?.as_str()?);
    overwrite_text(&mut record.time, row.get_ref(5)?.as_str()?);
    overwrite_optional(&mut record.actor_issuer, row.get_ref(6)?.as_str_or_null()?);
    overwrite_optional(&mut record.actor_subject, row.get_ref(7)?.as_str_or_null()?);
    Ok(())
}

/// Overwrites every field of `record` with `row`'s, selected as in [`SELECT_RANGE`].
fn overwrite_from_row(record: &mut StoredAuditRecord, row: &SqliteRow) -> Result<(), sqlx::Error> {
    record.seq = row.try_get(0)?;
    overwrite_bytes(&mut record.prev_hash, row.try_get(1)?);
    overwrite_bytes(&mut record.hash, row.try_get(2)?);
    overwrite_text(&mut record.canonical, row.try_get(3)?);
    overwrite_text(&mut record.event, row.try_get(4)?);
    overwrite_text(&mut record.time, row.try_get(5)?);
    overwrite_optional(&mut record.actor_issuer, row.try_get(6)?);
    overwrite_optional(&mut record.actor_subject, row.try_get(7)?);
    Ok(())
}

fn sqlx_err(err: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(err, None)
}

fn file_err(err: rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(err.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(_) => StoreError::Corrupt(err.to_string()),
        _ => StoreError::Query(err.to_string()),
    }
}

/// Records per query.
const CHUNK: i64 = 100_000;

const SELECT_RANGE: &str = "SELECT seq, prev_hash, hash, canonical, event, event_time, \
     actor_issuer, actor_subject FROM audit_records WHERE seq > ? AND seq <= ? ORDER BY seq";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::{
        AuditEvent, BreakReason, CanonicalEvent, ChainKey, ChainStore, EventKind, Verification,
        verify_store,
    };
    use crate::store::sqlite::SqliteStore;

    /// A chain of `n` records in memory (read through the pool) or in a file in `dir` (read
    /// with rusqlite).
    async fn chain(dir: Option<&tempfile::TempDir>, n: i64) -> SqliteStore {
        let url = dir.map_or("sqlite::memory:".to_owned(), |dir| {
            format!("sqlite://{}", dir.path().join("chain.db").display())
        });
        let store = SqliteStore::connect(&url).await.unwrap();
        assert_eq!(store.file.is_some(), dir.is_some());
        for i in 0..n {
            let event = CanonicalEvent::new(AuditEvent {
                event: EventKind::CredentialsIssued,
                time: chrono::DateTime::from_timestamp(1_800_000_000 + i, 0).unwrap(),
                actor: Some(crate::audit::Actor {
                    issuer: "https://idp".into(),
                    subject: format!("u{i}"),
                    email: None,
                    groups: vec![],
                }),
                target: json!({"role": "r"}),
                decision: None,
                details: json!({"n": i}),
                client_addr: None,
                user_agent: None,
                request_id: None,
            })
            .unwrap();
            store.append_audit(&event, &ChainKey::Sha256).await.unwrap();
        }
        store
    }

    async fn exec(store: &SqliteStore, sql: &str) {
        let done = sqlx::query(sql).execute(&store.pool).await.unwrap();
        assert_eq!(done.rows_affected(), 1, "{sql}");
    }

    fn broken(seq: i64, reason: BreakReason) -> Verification {
        Verification::Broken { seq, reason }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streamed_batches_name_the_first_broken_record_at_and_between_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        for dir in [None, Some(&dir)] {
            batches_name_the_first_broken_record(chain(dir, 23).await).await;
        }
    }

    async fn batches_name_the_first_broken_record(store: SqliteStore) {
        let key = ChainKey::Sha256;
        // Batches of 5: seq 10 ends the second batch, 11 starts the third, 13 is inside it.
        let intact = verify_store(&store, &key, 5).await.unwrap();
        assert!(
            matches!(intact, Verification::Intact { count: 23, .. }),
            "{intact:?}"
        );
        for (seq, column) in [(10, "actor_subject"), (11, "actor_subject"), (13, "event")] {
            let set = |value: &str| {
                format!("UPDATE audit_records SET {column} = '{value}' WHERE seq = {seq}")
            };
            exec(&store, &set("mallory")).await;
            assert_eq!(
                verify_store(&store, &key, 5).await.unwrap(),
                broken(seq, BreakReason::ColumnMismatch { column })
            );
            let stored = if column == "event" {
                "credentials.issued".to_owned()
            } else {
                format!("u{}", seq - 1)
            };
            exec(&store, &set(&stored)).await;
            assert_eq!(verify_store(&store, &key, 5).await.unwrap(), intact);
        }
        // The first break wins over later ones, wherever the batches end.
        exec(
            &store,
            "UPDATE audit_records SET canonical = canonical || ' ' WHERE seq = 6",
        )
        .await;
        for batch in [1, 5, 6, 7, 100] {
            assert_eq!(
                verify_store(&store, &key, batch).await.unwrap(),
                broken(6, BreakReason::HashMismatch),
                "batch {batch}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn query_chunks_keep_gaps_and_the_head() {
        let dir = tempfile::tempdir().unwrap();
        for dir in [None, Some(&dir)] {
            let store = chain(dir, 23).await;
            // Records 14 and 15 (the first of a query chunk of 7) are deleted.
            exec(&store, "DELETE FROM audit_records WHERE seq = 15").await;
            exec(&store, "DELETE FROM audit_records WHERE seq = 14").await;
            for chunk in [1, 7, 14, 100] {
                let (full, mut checked) = tokio::sync::mpsc::channel(64);
                let (_give_back, recycled) = tokio::sync::mpsc::unbounded_channel();
                let mut out = RecordSender::new(full, recycled, 3);
                let out = match &store.file {
                    None => {
                        read_pool(&store.pool, 0, 20, chunk, &mut out)
                            .await
                            .unwrap();
                        out
                    }
                    Some(file) => {
                        let file = file.clone();
                        tokio::task::spawn_blocking(move || {
                            read_file(&file, 0, 20, chunk, &mut out).unwrap();
                            out
                        })
                        .await
                        .unwrap()
                    }
                };
                out.finish().await;
                let mut seqs = Vec::new();
                while let Some(batch) = checked.recv().await {
                    seqs.extend(batch.records().map(|r| r.seq));
                }
                let want: Vec<i64> = (1..=20).filter(|s| *s != 14 && *s != 15).collect();
                assert_eq!(seqs, want, "chunk {chunk}");
            }
            assert_eq!(
                verify_store(&store, &ChainKey::Sha256, 4).await.unwrap(),
                broken(14, BreakReason::Missing { next: 16 })
            );
        }
    }
}
