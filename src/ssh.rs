//! SSH values latchkey checks before anything else happens: the public key a user asks to have
//! pushed ([`key`]), the host keys a target pins ([`host_key`]) and OS user names.
//!
//! Pure: no I/O, no network, no clock. Nothing here echoes the text it refuses (a pasted private
//! key must never reach an answer, a log line or an audit record).

pub mod host_key;
pub mod key;

pub use host_key::{HostKey, HostKeyError};
pub use key::{KeyError, PublicKey};

/// Whether `name` may be an OS user to log in as: `^[a-z_][a-z0-9_-]{0,31}$`.
///
/// The conservative portable user name of useradd(8) (no `$`, no upper case, at most 32
/// characters); every name EC2 Instance Connect and OpenSSH accept for the catalog's targets fits.
// SECURITY: the catalog, the policy decision and the push all use this one rule, so a name that
// passes one of them passes all, and nothing that could be an option (`-o…`) or a path ever does.
pub fn is_os_user(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_OS_USER_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The longest OS user name [`is_os_user`] accepts.
pub const MAX_OS_USER_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_user_names_follow_the_portable_rule() {
        for ok in [
            "ec2-user",
            "root",
            "_svc",
            "a",
            "ubuntu",
            "a1_-",
            &"a".repeat(32),
        ] {
            assert!(is_os_user(ok), "{ok}");
        }
        let long = "a".repeat(33);
        for bad in [
            "", "Root", "1root", "-o", "ec2 user", "a$", "a.b", "é", "root\n", "a/b", &long,
        ] {
            assert!(!is_os_user(bad), "{bad:?}");
        }
    }
}
