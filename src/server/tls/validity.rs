//! The end of a certificate's validity (`notAfter`), read from its DER encoding. Pure.
//!
//! Only the path to `tbsCertificate.validity` is walked (RFC 5280, section 4.1):
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//!     version [0] EXPLICIT OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
//!     issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time }, ... }, ... }
//! Time ::= UTCTime (YYMMDDHHMMSSZ) | GeneralizedTime (YYYYMMDDHHMMSSZ)
//! ```
//!
//! Every length is checked against what is left, so a truncated or hostile input is an error,
//! never a panic. The certificate has passed rustls's own parsing before this runs; this reads
//! one more field from it for the audit record.

use chrono::{DateTime, NaiveDate, Utc};

/// The DER is not a certificate whose validity could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the certificate's validity cannot be read: {0}")]
pub struct ValidityError(&'static str);

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's `notAfter`.
///
/// # Errors
///
/// [`ValidityError`] when the DER does not have the shape above.
pub(super) fn not_after(der: &[u8]) -> Result<DateTime<Utc>, ValidityError> {
    let (tag, certificate, _) = tlv(der)?;
    expect(tag, SEQUENCE, "not a SEQUENCE")?;
    let (tag, tbs, _) = tlv(certificate)?;
    expect(tag, SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let (tag, _, rest) = tlv(tbs)?;
    // `version` is absent in v1 certificates; then the first field is the serial number.
    let (tag, rest) = if tag == VERSION {
        let (tag, _, rest) = tlv(rest)?;
        (tag, rest)
    } else {
        (tag, rest)
    };
    expect(tag, INTEGER, "no serial number")?;
    let (tag, _, rest) = tlv(rest)?;
    expect(tag, SEQUENCE, "no signature algorithm")?;
    let (tag, _, rest) = tlv(rest)?;
    expect(tag, SEQUENCE, "no issuer")?;
    let (tag, validity, _) = tlv(rest)?;
    expect(tag, SEQUENCE, "no validity")?;
    let (_, _, rest) = tlv(validity)?;
    let (tag, time, _) = tlv(rest)?;
    match tag {
        UTC_TIME => utc_time(time),
        GENERALIZED_TIME => generalized_time(time),
        _ => Err(ValidityError("notAfter is not a time")),
    }
}

fn expect(tag: u8, wanted: u8, why: &'static str) -> Result<(), ValidityError> {
    if tag == wanted {
        Ok(())
    } else {
        Err(ValidityError(why))
    }
}

/// One DER element: `(tag, contents, rest)`. Single-byte tags; definite lengths of up to four
/// bytes.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), ValidityError> {
    const TRUNCATED: ValidityError = ValidityError("truncated");
    let (&tag, rest) = input.split_first().ok_or(TRUNCATED)?;
    let (&first, mut rest) = rest.split_first().ok_or(TRUNCATED)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 {
            return Err(ValidityError("unsupported length"));
        }
        let (bytes, after) = rest.split_at_checked(octets).ok_or(TRUNCATED)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    let (contents, rest) = rest.split_at_checked(len).ok_or(TRUNCATED)?;
    Ok((tag, contents, rest))
}

/// `YYMMDDHHMMSSZ`; years 50..99 are 19xx, 00..49 are 20xx (RFC 5280, 4.1.2.5.1).
fn utc_time(text: &[u8]) -> Result<DateTime<Utc>, ValidityError> {
    let (yy, rest) = split(time_digits(text, 12)?, 2)?;
    let yy = number(yy);
    let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
    at(year, rest)
}

/// `YYYYMMDDHHMMSSZ` (RFC 5280, 4.1.2.5.2: no fractions).
fn generalized_time(text: &[u8]) -> Result<DateTime<Utc>, ValidityError> {
    let (year, rest) = split(time_digits(text, 14)?, 4)?;
    at(number(year), rest)
}

fn split(digits: &[u8], at: usize) -> Result<(&[u8], &[u8]), ValidityError> {
    digits
        .split_at_checked(at)
        .ok_or(ValidityError("not a UTC time"))
}

/// The `n` digits before the final `Z`.
fn time_digits(text: &[u8], n: usize) -> Result<&[u8], ValidityError> {
    match text.split_last() {
        Some((b'Z', digits)) if digits.len() == n && digits.iter().all(u8::is_ascii_digit) => {
            Ok(digits)
        }
        _ => Err(ValidityError("not a UTC time")),
    }
}

/// The value of ASCII digits (at most four here).
fn number(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
}

/// `MMDDHHMMSS` of `year`.
fn at(year: u32, rest: &[u8]) -> Result<DateTime<Utc>, ValidityError> {
    let part = |i: usize| rest.get(i..i + 2).map(number).unwrap_or(u32::MAX);
    let year = i32::try_from(year).map_err(|_| ValidityError("year out of range"))?;
    NaiveDate::from_ymd_opt(year, part(0), part(2))
        .and_then(|d| d.and_hms_opt(part(4), part(6), part(8)))
        .map(|t| t.and_utc())
        .ok_or(ValidityError("not a valid date"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn cert_until(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_not_after_as_utc_time_and_as_generalized_time() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on, as RFC 5280 asks.
        for (year, month, day) in [(2031, 3, 14), (2049, 12, 31), (2050, 1, 1), (2107, 7, 9)] {
            let got = not_after(&cert_until(year, month, day)).unwrap();
            assert_eq!(
                got.format("%Y-%m-%d %H:%M:%S").to_string(),
                format!("{year:04}-{month:02}-{day:02} 00:00:00")
            );
        }
    }

    #[test]
    fn utc_time_years_pivot_at_1950() {
        assert_eq!(
            utc_time(b"500101000000Z").unwrap().to_rfc3339(),
            "1950-01-01T00:00:00+00:00"
        );
        assert_eq!(
            utc_time(b"491231235959Z").unwrap().to_rfc3339(),
            "2049-12-31T23:59:59+00:00"
        );
    }

    #[test]
    fn malformed_times_are_errors() {
        for bad in [
            &b"491231235959"[..],
            b"4912312359Z",
            b"49123123595aZ",
            b"491332000000Z",
            b"491231250000Z",
        ] {
            assert!(utc_time(bad).is_err(), "{bad:?}");
        }
        assert!(generalized_time(b"20491231235959.5Z").is_err());
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let der = cert_until(2031, 3, 14);
        for len in 0..der.len().min(400) {
            assert!(not_after(der.get(..len).unwrap()).is_err(), "{len}");
        }
        assert!(not_after(b"-----BEGIN CERTIFICATE-----").is_err());
        assert!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(not_after(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_err());
    }
}
