//! The PostgreSQL test database: one environment variable, [`URL_VAR`] (default
//! [`DEFAULT_URL`]: the trust-auth server on 127.0.0.1:5432 and its database `test`), and a fresh
//! schema per test, so concurrent tests and runs never meet. [`PgSchema`] drops its schema when it
//! is dropped, also while a failing test unwinds.

use sqlx::Connection;

/// The environment variable naming the PostgreSQL database tests may create schemas in.
pub const URL_VAR: &str = "LATCHKEY_TEST_PG_URL";

/// The database used when [`URL_VAR`] is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of its own in the test database, dropped (with everything in it) on drop.
pub struct PgSchema {
    /// A connection URL whose sessions use only this schema (`search_path`) and carry
    /// [`PgSchema::app_name`] as their `application_name`.
    pub url: String,
    /// The schema's name, unique to this value.
    pub schema: String,
    /// The `application_name` of every connection made through [`PgSchema::url`], to find them
    /// in `pg_stat_activity`.
    pub app_name: String,
    admin_url: String,
}

/// The test database's URL: [`URL_VAR`] or [`DEFAULT_URL`].
pub fn admin_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

impl PgSchema {
    /// Creates a fresh schema named `{prefix}_{uuid}`.
    pub async fn create(prefix: &str) -> Self {
        let admin_url = admin_url();
        let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach the test PostgreSQL at {admin_url} (set {URL_VAR}): {e}")
            });
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{admin_url}{sep}options=-c%20search_path%3D{schema}&application_name={schema}"
        );
        Self {
            url,
            app_name: schema.clone(),
            schema,
            admin_url,
        }
    }

    /// `true` while the schema exists (for the harness's own test).
    pub async fn exists(admin_url: &str, schema: &str) -> bool {
        let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)",
        )
        .bind(schema)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (admin_url, schema) = (self.admin_url.clone(), self.schema.clone());
        // Drop may run inside a test's runtime, which cannot block on itself, or while a failed
        // test unwinds: use a thread with its own runtime, and never panic here.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut admin)
                    .await
                    .map(|_| ())
            })
            .map_err(|e| e.to_string())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema `{}`: {dropped:?}", self.schema);
        }
    }
}
