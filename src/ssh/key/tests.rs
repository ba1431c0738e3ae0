use base64::Engine as _;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use super::*;

const RSA_1024: &str = include_str!("../../../tests/fixtures/ssh/rsa-1024.pub");
const RSA_2048: &str = include_str!("../../../tests/fixtures/ssh/rsa-2048.pub");
const RSA_4096: &str = include_str!("../../../tests/fixtures/ssh/rsa-4096.pub");
const RSA_8192: &str = include_str!("../../../tests/fixtures/ssh/rsa-8192.pub");
const ED25519: &str = include_str!("../../../tests/fixtures/ssh/ed25519.pub");
const ED25519_CERT: &str = include_str!("../../../tests/fixtures/ssh/ed25519-cert.pub");
const ECDSA_256: &str = include_str!("../../../tests/fixtures/ssh/ecdsa-256.pub");
const ECDSA_384: &str = include_str!("../../../tests/fixtures/ssh/ecdsa-384.pub");
const ECDSA_521: &str = include_str!("../../../tests/fixtures/ssh/ecdsa-521.pub");
const DSA: &str = include_str!("../../../tests/fixtures/ssh/dsa.pub");
const FINGERPRINTS: &str = include_str!("../../../tests/fixtures/ssh/fingerprints.txt");

fn ed25519_line() -> String {
    PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .unwrap()
        .public_key()
        .to_openssh()
        .unwrap()
}

fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An `ssh-rsa` line with a modulus of exactly `bits` bits (not a real RSA modulus: nothing here
/// checks the arithmetic), encoded as an mpint with the leading zero byte it needs.
fn rsa_line(bits: u32) -> String {
    let len = usize::try_from(bits.div_ceil(8)).unwrap();
    let mut n = vec![0xa5_u8; len];
    let top = (bits - 1) % 8;
    n[0] = (1 << top) | 1;
    *n.last_mut().unwrap() |= 1;
    if n[0] & 0x80 != 0 {
        n.insert(0, 0);
    }
    let mut blob = Vec::new();
    ssh_string(&mut blob, b"ssh-rsa");
    ssh_string(&mut blob, &[1, 0, 1]);
    ssh_string(&mut blob, &n);
    format!(
        "ssh-rsa {} crafted",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// A line whose blob is `blob_type` with 32 bytes of key, written as `line_type`.
fn blob_line(line_type: &str, blob_type: &str) -> String {
    let mut blob = Vec::new();
    ssh_string(&mut blob, blob_type.as_bytes());
    ssh_string(&mut blob, &[7; 32]);
    format!(
        "{line_type} {}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

fn base64_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

#[test]
fn every_refusal_has_its_own_error_and_never_echoes_the_input() {
    let ed = ed25519_line();
    let ed_blob = base64_of(&ed).to_owned();
    let private = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .unwrap()
        .to_openssh(LineEnding::LF)
        .unwrap()
        .to_string();
    let private_body: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHk0rIRZ0L2Y1Su5HgmXbxoN2bVQdFJTBAmDdZJ8HcRd\n-----END PRIVATE KEY-----\n";
    let sk = blob_line("sk-ssh-ed25519@openssh.com", "sk-ssh-ed25519@openssh.com");
    let sk_ecdsa = blob_line(
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    );
    let rsa_blob_as_ed = format!("ssh-ed25519 {}", base64_of(RSA_2048));
    let ed_blob_as_rsa = format!("ssh-rsa {ed_blob}");
    let oversized = format!("{ed} {}", "x".repeat(MAX_LINE_BYTES));
    let cases: Vec<(&str, String, KeyError)> = vec![
        ("empty", String::new(), KeyError::Empty),
        ("blank", " \t\n".into(), KeyError::Empty),
        ("over 8 KiB", oversized, KeyError::TooLong),
        ("two keys", format!("{ed}\n{ed}"), KeyError::MultipleLines),
        ("two newlines", format!("{ed}\n\n"), KeyError::MultipleLines),
        (
            "carriage return",
            format!("{ed}\r\n"),
            KeyError::MultipleLines,
        ),
        (
            "lone carriage return",
            format!("{ed}\rx"),
            KeyError::MultipleLines,
        ),
        ("openssh private key", private.clone(), KeyError::PrivateKey),
        ("private key body", private_body, KeyError::PrivateKey),
        ("pkcs8 private key", pkcs8.into(), KeyError::PrivateKey),
        ("dsa", DSA.into(), KeyError::Dsa),
        ("ecdsa p256", ECDSA_256.into(), KeyError::Ecdsa),
        ("ecdsa p384", ECDSA_384.into(), KeyError::Ecdsa),
        ("ecdsa p521", ECDSA_521.into(), KeyError::Ecdsa),
        ("sk ed25519", sk, KeyError::SecurityKey),
        ("sk ecdsa", sk_ecdsa, KeyError::SecurityKey),
        ("certificate", ED25519_CERT.into(), KeyError::Certificate),
        (
            "command option",
            format!("command=\"/bin/sh\" {ed}"),
            KeyError::Options,
        ),
        (
            "from option",
            format!("from=\"10.0.0.0/8\" {ed}"),
            KeyError::Options,
        ),
        ("no-pty option", format!("no-pty {ed}"), KeyError::Options),
        (
            "restrict option",
            format!("restrict,pty {ed}"),
            KeyError::Options,
        ),
        (
            "unknown type",
            format!("ssh-ed448 {ed_blob}"),
            KeyError::Options,
        ),
        ("type only", "ssh-ed25519".into(), KeyError::Malformed),
        ("not base64", "ssh-ed25519 ***".into(), KeyError::Malformed),
        (
            "truncated key",
            format!("ssh-ed25519 {}", &ed_blob[..40]),
            KeyError::Malformed,
        ),
        (
            "rsa data written as ed25519",
            rsa_blob_as_ed,
            KeyError::TypeMismatch,
        ),
        (
            "ed25519 data written as rsa",
            ed_blob_as_rsa,
            KeyError::TypeMismatch,
        ),
        (
            "comment with a control character",
            format!("{ed} me\u{1b}[31m"),
            KeyError::CommentControl,
        ),
        (
            "comment with a tab inside",
            format!("{ed} a\tb"),
            KeyError::CommentControl,
        ),
        (
            "comment with a bidi override",
            format!("{ed} a\u{202e}b"),
            KeyError::CommentControl,
        ),
        (
            "rsa 1024",
            RSA_1024.into(),
            KeyError::RsaSize { bits: 1024 },
        ),
        (
            "rsa 8192",
            RSA_8192.into(),
            KeyError::RsaSize { bits: 8192 },
        ),
        ("rsa 2047", rsa_line(2047), KeyError::RsaSize { bits: 2047 }),
        ("rsa 4097", rsa_line(4097), KeyError::RsaSize { bits: 4097 }),
    ];
    for (name, input, expected) in cases {
        let err = PublicKey::parse(&input).expect_err(name);
        assert_eq!(err, expected, "{name}");
        let shown = format!("{err} {err:?}");
        // Key data, PEM lines, options: anything long enough to be more than a key type name.
        for token in input.split_whitespace().filter(|t| t.len() >= 16) {
            assert!(
                !shown.contains(token),
                "{name}: the message echoes the input"
            );
        }
        assert!(!shown.contains(&ed_blob), "{name}");
        assert!(!shown.contains('\n'), "{name}: one line");
    }
}

#[test]
fn ed25519_and_rsa_of_2048_to_4096_bits_are_accepted() {
    let ed = ed25519_line();
    let cases: Vec<(String, &str, u32)> = vec![
        (ed.clone(), "ssh-ed25519", 256),
        (format!("{ed} alice@laptop\n"), "ssh-ed25519", 256),
        (
            format!("  {ed}\tsome comment with spaces  "),
            "ssh-ed25519",
            256,
        ),
        (ED25519.into(), "ssh-ed25519", 256),
        (RSA_2048.into(), "ssh-rsa", 2048),
        (RSA_4096.into(), "ssh-rsa", 4096),
        (rsa_line(2048), "ssh-rsa", 2048),
        (rsa_line(3071), "ssh-rsa", 3071),
        (rsa_line(4096), "ssh-rsa", 4096),
    ];
    for (line, algorithm, bits) in cases {
        let key = PublicKey::parse(&line).unwrap();
        assert_eq!(key.algorithm(), algorithm);
        assert_eq!(key.bits(), bits);
        let words: Vec<&str> = line.split_whitespace().take(2).collect();
        assert_eq!(
            key.openssh_line(),
            words.join(" "),
            "type and base64, no comment"
        );
    }
}

#[test]
fn a_line_of_exactly_8_kib_is_not_too_long() {
    let ed = ed25519_line();
    let pad = MAX_LINE_BYTES - ed.len() - 2;
    let line = format!("{ed} {}\n", "x".repeat(pad));
    assert_eq!(line.len(), MAX_LINE_BYTES);
    assert!(PublicKey::parse(&line).is_ok());
    assert_eq!(
        PublicKey::parse(&format!("{ed} {}\n", "x".repeat(pad + 1))),
        Err(KeyError::TooLong)
    );
}

#[test]
fn the_fingerprint_is_the_one_ssh_keygen_prints() {
    // Recorded with `ssh-keygen -lf` when the fixtures were made.
    for (line, file) in [
        (ED25519, "ed25519.pub"),
        (RSA_2048, "rsa-2048.pub"),
        (RSA_4096, "rsa-4096.pub"),
    ] {
        let expected = FINGERPRINTS
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{file} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap();
        assert_eq!(PublicKey::parse(line).unwrap().fingerprint(), expected);
    }
}

#[test]
fn the_fingerprint_matches_the_installed_ssh_keygen() {
    let Ok(out) = std::process::Command::new("ssh-keygen").arg("-?").output() else {
        eprintln!("ssh-keygen is not installed; the recorded fingerprints are checked instead");
        return;
    };
    drop(out);
    let dir = tempfile::tempdir().unwrap();
    for line in [ed25519_line(), RSA_2048.to_owned(), RSA_4096.to_owned()] {
        let path = dir.path().join("key.pub");
        std::fs::write(&path, &line).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        let printed = String::from_utf8(out.stdout).unwrap();
        let key = PublicKey::parse(&line).unwrap();
        assert_eq!(
            printed.split_whitespace().nth(1),
            Some(key.fingerprint().as_str())
        );
        assert_eq!(
            printed.split_whitespace().next(),
            Some(key.bits().to_string().as_str())
        );
    }
}

#[test]
fn modulus_bits_ignore_one_leading_zero_byte() {
    assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), Some(16));
    assert_eq!(modulus_bits(&[0x80, 0x00]), Some(16));
    assert_eq!(modulus_bits(&[0x01, 0x00]), Some(9));
    assert_eq!(modulus_bits(&[]), None);
    assert_eq!(modulus_bits(&[0x00]), None);
}
