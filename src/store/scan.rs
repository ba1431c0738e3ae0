//! Streaming the audit chain's rows for verification ([`ChainStore::audit_scan`]): one query per
//! chunk of `seq`s, each row read borrowed from the driver into a recycled record, so that
//! reading a million records allocates per batch rather than eight times per record.
//!
//! [`ChainStore::audit_scan`]: crate::audit::ChainStore::audit_scan

use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::StoreError;
use crate::audit::scan::{overwrite_bytes, overwrite_optional, overwrite_text};
use crate::audit::{RecordSender, Scan, StoredAuditRecord};

/// Sends the records with `after_seq < seq <= upto` to `out` (see
/// [`ChainStore::audit_scan`](crate::audit::ChainStore::audit_scan)).
pub(crate) async fn sqlite(
    pool: &SqlitePool,
    after_seq: i64,
    upto: i64,
    out: &mut RecordSender,
) -> Result<(), StoreError> {
    sqlite_in_chunks(pool, after_seq, upto, CHUNK, out).await
}

/// [`sqlite`], reading `chunk` records per query.
async fn sqlite_in_chunks(
    pool: &SqlitePool,
    after_seq: i64,
    upto: i64,
    chunk: i64,
    out: &mut RecordSender,
) -> Result<(), StoreError> {
    let mut after = after_seq;
    while after < upto {
        // Chunks bound how long one read holds its snapshot (and the WAL behind it).
        let end = after.saturating_add(chunk.max(1)).min(upto);
        let mut rows = sqlx::query(SELECT_RANGE).bind(after).bind(end).fetch(pool);
        while let Some(row) = rows.try_next().await.map_err(sqlx_err)? {
            let mut record = out.spare();
            if let Err(err) = overwrite_from_row(&mut record, &row) {
                return Err(sqlx_err(err));
            }
            if out.push(record).await == Scan::Closed {
                return Ok(());
            }
        }
        after = end;
    }
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

    async fn chain(n: i64) -> SqliteStore {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
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

    #[tokio::test]
    async fn streamed_batches_name_the_first_broken_record_at_and_between_boundaries() {
        let store = chain(23).await;
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

    #[tokio::test]
    async fn query_chunks_keep_gaps_and_the_head() {
        let store = chain(23).await;
        let key = ChainKey::Sha256;
        // Records 14 and 15 (the first of a query chunk of 7) are deleted.
        exec(&store, "DELETE FROM audit_records WHERE seq = 15").await;
        exec(&store, "DELETE FROM audit_records WHERE seq = 14").await;
        for chunk in [1, 7, 14, 100] {
            let (full, mut checked) = tokio::sync::mpsc::channel(64);
            let (_give_back, recycled) = tokio::sync::mpsc::unbounded_channel();
            let mut out = RecordSender::new(full, recycled, 3);
            sqlite_in_chunks(&store.pool, 0, 20, chunk, &mut out)
                .await
                .unwrap();
            out.finish().await;
            drop(out);
            let mut seqs = Vec::new();
            while let Some(batch) = checked.recv().await {
                seqs.extend(batch.records().map(|r| r.seq));
            }
            let want: Vec<i64> = (1..=20).filter(|s| *s != 14 && *s != 15).collect();
            assert_eq!(seqs, want, "chunk {chunk}");
        }
        assert_eq!(
            verify_store(&store, &key, 4).await.unwrap(),
            broken(14, BreakReason::Missing { next: 16 })
        );
    }
}
