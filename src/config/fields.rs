//! Reads one TOML table field by field, collecting every error with its key path.
//!
//! serde stops at the first error; operators want all of them at once, so each key is
//! deserialized on its own and whatever is left over at the end is an unknown key.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::ConfigIssue;

/// A TOML table being consumed key by key.
pub(crate) struct Fields<'e> {
    path: String,
    table: Table,
    errors: &'e mut Vec<ConfigIssue>,
}

impl<'e> Fields<'e> {
    /// Starts reading `table`, found at `path` (empty for the root).
    pub(crate) fn new(
        path: impl Into<String>,
        table: Table,
        errors: &'e mut Vec<ConfigIssue>,
    ) -> Self {
        Self {
            path: path.into(),
            table,
            errors,
        }
    }

    /// The full dotted path of `key` inside this table.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes an optional key; a value of the wrong type is recorded as an error.
    pub(crate) fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.table.remove(key)?;
        match value.try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                let path = self.path_of(key);
                self.error(path, first_line(&e.to_string()));
                None
            }
        }
    }

    /// Takes a required key; a missing key is recorded as an error.
    pub(crate) fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.table.contains_key(key) {
            let path = self.path_of(key);
            self.error(path, "is required".to_owned());
            return None;
        }
        self.optional(key)
    }

    /// Takes a sub-table (a missing one reads as empty).
    pub(crate) fn table(&mut self, key: &str) -> Table {
        match self.table.remove(key) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(_) => {
                let path = self.path_of(key);
                self.error(path, "must be a table".to_owned());
                Table::new()
            }
        }
    }

    /// Takes an array of tables, such as `[[oidc.provider]]`.
    pub(crate) fn array_of_tables(&mut self, key: &str) -> Vec<Table> {
        match self.table.remove(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::Table(t) => out.push(t),
                        _ => {
                            let path = format!("{}[{i}]", self.path_of(key));
                            self.error(path, "must be a table".to_owned());
                        }
                    }
                }
                out
            }
            Some(_) => {
                let path = self.path_of(key);
                self.error(path, "must be an array of tables".to_owned());
                Vec::new()
            }
        }
    }

    /// Records an error at `path`.
    pub(crate) fn error(&mut self, path: String, message: String) {
        self.errors.push(ConfigIssue { path, message });
    }

    /// Records every key that was not taken as unknown.
    pub(crate) fn finish(self) {
        for key in self.table.keys() {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            self.errors.push(ConfigIssue {
                path,
                message: "unknown key".to_owned(),
            });
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}
