//! The managed block of the AWS config file (`~/.aws/config`, or `AWS_CONFIG_FILE`).
//!
//! [`apply`] is pure: it replaces the text between `# BEGIN latchkey managed` and
//! `# END latchkey managed` (or appends the block) and keeps every other byte of the file.
//! Running it twice with the same profiles gives the same text.

use super::managed_block::{self, DamagedBlock, Markers};
use std::path::Path;

/// A profile to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile name (prefix + role).
    pub name: String,
    /// The `credential_process` command line.
    pub credential_process: String,
    /// The region, if known.
    pub region: Option<String>,
}

/// The managed block for `profiles`.
pub fn block(profiles: &[Profile]) -> String {
    let mut out = format!("{BEGIN}\n{NOTE}\n");
    for p in profiles {
        out.push_str(&format!("[profile {}]\n", p.name));
        if let Some(r) = &p.region {
            out.push_str(&format!("region = {r}\n"));
        }
        out.push_str(&format!("credential_process = {}\n", p.credential_process));
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// `existing` with its managed block replaced by `block` (or `block` appended).
///
/// # Errors
///
/// [`DamagedBlock`] when only one of the markers is in the file.
pub fn apply(existing: &str, block: &str) -> Result<String, DamagedBlock> {
    managed_block::apply(existing, block, MARKERS)
}

/// Whether `name` can be used in a profile header and on a command line as is.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A path quoted for `credential_process` (the AWS CLI splits it like a shell).
pub fn quote_path(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
    {
        s
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

const BEGIN: &str = "# BEGIN latchkey managed";
const END: &str = "# END latchkey managed";

/// The lines that open and close the block in the AWS config file.
pub const MARKERS: Markers = Markers {
    begin: BEGIN,
    end: END,
};
const NOTE: &str = "# Written by `latchkey configure`; changes inside this block are replaced.";

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Vec<Profile> {
        vec![Profile {
            name: "latchkey-readonly".into(),
            credential_process: "/usr/bin/latchkey credentials --role readonly".into(),
            region: Some("us-east-1".into()),
        }]
    }

    #[test]
    fn appends_then_replaces_keeping_other_bytes() {
        let original = "[default]\r\nregion = eu-west-1\n[profile other]\noutput = json";
        let b = block(&profiles());
        let once = apply(original, &b).unwrap();
        assert!(once.starts_with(original));
        let twice = apply(&once, &b).unwrap();
        assert_eq!(once, twice);

        let with_tail = format!("{once}[profile after]\nregion = x\n");
        let replaced = apply(&with_tail, &block(&[])).unwrap();
        assert!(replaced.starts_with(original));
        assert!(replaced.ends_with("# END latchkey managed\n[profile after]\nregion = x\n"));
        assert!(!replaced.contains("readonly"));
    }

    #[test]
    fn refuses_a_damaged_block_and_odd_names() {
        assert!(apply("# BEGIN latchkey managed\n", "x").is_err());
        assert!(is_safe_name("read-only_1.x"));
        assert!(!is_safe_name("a]\n[profile evil"));
        assert_eq!(quote_path(Path::new("/a b/latchkey")), "\"/a b/latchkey\"");
    }
}
