//! Canonical JSON: the one byte sequence an audit event hashes to, whatever the map order or
//! feature flags of the JSON library that built it.
//!
//! The output follows RFC 8785 (JSON Canonicalization Scheme) for every value a
//! [`serde_json::Value`] can hold:
//! - no insignificant whitespace;
//! - object members sorted by their names compared as UTF-16 code units, recursively;
//! - strings escaped minimally: `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`, other control
//!   characters below U+0020 as `\u00xx` (lowercase hex), everything else as literal UTF-8;
//! - numbers as ECMAScript's `Number.prototype.toString` prints the nearest IEEE 754 double.
//!
//! Two deliberate refusals, so that a value never changes meaning silently: integers outside
//! ±(2^53 − 1), which a double cannot hold exactly, and nesting deeper than [`MAX_DEPTH`].
//!
//! Pure: no I/O.

use serde_json::{Number, Value};

/// Why a value has no canonical form.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum CanonicalError {
    /// A number is not a finite double.
    #[error("number `{0}` is not finite")]
    NonFinite(String),
    /// The value could not be turned into JSON at all.
    #[error("value cannot be serialized as json: {0}")]
    Serialize(String),
    /// Objects or arrays nest deeper than [`MAX_DEPTH`].
    #[error("json nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An integer cannot be represented exactly as a double.
    #[error("integer `{0}` is outside ±(2^53 - 1) and cannot be represented exactly")]
    UnsafeInteger(String),
}

/// Returns the canonical text of `value`.
///
/// # Errors
///
/// Returns [`CanonicalError`] for integers beyond ±(2^53 − 1), non-finite numbers and nesting
/// deeper than [`MAX_DEPTH`].
pub fn to_string(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(512);
    write_value(&mut out, value, 0)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            let depth = deeper(depth)?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let depth = deeper(depth)?;
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // SECURITY: sort here rather than trust the map's iteration order, which changes if
            // any crate in the build enables serde_json's `preserve_order`.
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, item, depth)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn deeper(depth: usize) -> Result<usize, CanonicalError> {
    if depth >= MAX_DEPTH {
        return Err(CanonicalError::TooDeep);
    }
    Ok(depth + 1)
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                let code = u32::from(c);
                out.push_str("\\u00");
                out.push(hex_digit(code >> 4));
                out.push(hex_digit(code));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex_digit(n: u32) -> char {
    // INVARIANT: `n & 0xf` is a valid base-16 digit, so the fallback is never taken.
    char::from_digit(n & 0xf, 16).unwrap_or('0')
}

fn write_number(out: &mut String, n: &Number) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger(u.to_string()));
        }
        out.push_str(&u.to_string());
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger(i.to_string()));
        }
        out.push_str(&i.to_string());
    } else {
        let f = n
            .as_f64()
            .ok_or_else(|| CanonicalError::NonFinite(n.to_string()))?;
        write_double(out, f)?;
    }
    Ok(())
}

/// Writes `f` as ECMAScript's `Number.prototype.toString` does (ECMA-262, Number::toString).
fn write_double(out: &mut String, f: f64) -> Result<(), CanonicalError> {
    if !f.is_finite() {
        return Err(CanonicalError::NonFinite(f.to_string()));
    }
    if f == 0.0 {
        // Covers -0 as well, which ECMAScript prints as "0".
        out.push('0');
        return Ok(());
    }
    if f < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` prints the shortest digit string that round-trips, closest to the value,
    // which is the digit string ECMAScript requires: `d[.ddd]e<exp>`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci
        .split_once('e')
        .ok_or_else(|| CanonicalError::NonFinite(sci.clone()))?;
    let exp: i64 = exp
        .parse()
        .map_err(|_| CanonicalError::NonFinite(sci.clone()))?;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // The value is 0.d1d2...dk × 10^n.
    let k = i64::try_from(digits.len()).map_err(|_| CanonicalError::NonFinite(sci.clone()))?;
    let n = exp + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        push_zeros(out, n - k);
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits
            .split_at_checked(usize::try_from(n).unwrap_or(0))
            .ok_or_else(|| CanonicalError::NonFinite(sci.clone()))?;
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        push_zeros(out, -n);
        out.push_str(&digits);
    } else {
        let mut chars = digits.chars();
        if let Some(first) = chars.next() {
            out.push(first);
        }
        let rest = chars.as_str();
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).unsigned_abs().to_string());
    }
    Ok(())
}

fn push_zeros(out: &mut String, count: i64) {
    for _ in 0..count {
        out.push('0');
    }
}

/// The deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// 2^53 − 1, the largest integer every double-based JSON reader holds exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canon(v: Value) -> String {
        to_string(&v).unwrap()
    }

    #[test]
    fn sorts_keys_recursively_without_whitespace() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": null, "x": true}], "m": false}, "": "e"});
        assert_eq!(
            canon(v),
            r#"{"":"e","a":{"m":false,"z":[3,{"x":true,"y":null}]},"b":1}"#
        );
    }

    #[test]
    fn sorts_keys_by_utf16_code_units() {
        // U+E000 sorts after U+1F600 in UTF-16 (0xD83D...) but before it in UTF-8 and code
        // points; RFC 8785 wants UTF-16. Also: uppercase before lowercase, shorter prefix first.
        let v = json!({"\u{e000}": 1, "\u{1f600}": 2, "a": 3, "B": 4, "aa": 5});
        assert_eq!(
            canon(v),
            "{\"B\":4,\"a\":3,\"aa\":5,\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn escapes_only_what_rfc_8785_escapes() {
        let v = json!("q\"b\\s/\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}é\u{2028}😀");
        assert_eq!(
            canon(v),
            "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0000\\u001f\u{7f}é\u{2028}😀\""
        );
    }

    #[test]
    fn prints_numbers_as_ecmascript() {
        let cases: &[(Value, &str)] = &[
            (json!(0), "0"),
            (json!(-0.0), "0"),
            (json!(1), "1"),
            (json!(-42), "-42"),
            (json!(1.0), "1"),
            (json!(1.5), "1.5"),
            (json!(-0.25), "-0.25"),
            (json!(100.0), "100"),
            (json!(123456789.125), "123456789.125"),
            (json!(1e20), "100000000000000000000"),
            (json!(1e21), "1e+21"),
            (json!(1.5e300), "1.5e+300"),
            (json!(0.000001), "0.000001"),
            (json!(0.0000001), "1e-7"),
            (json!(1.2345e-7), "1.2345e-7"),
            (json!(0.1), "0.1"),
            (json!(4.35), "4.35"),
            (json!(9007199254740991_u64), "9007199254740991"),
            (json!(-9007199254740991_i64), "-9007199254740991"),
            (json!(5e-324), "5e-324"),
            (json!(1.7976931348623157e308), "1.7976931348623157e+308"),
        ];
        for (value, want) in cases {
            assert_eq!(canon(value.clone()), *want, "for {value}");
        }
    }

    #[test]
    fn refuses_integers_a_double_cannot_hold() {
        assert!(matches!(
            to_string(&json!(9007199254740992_u64)),
            Err(CanonicalError::UnsafeInteger(_))
        ));
        assert!(matches!(
            to_string(&json!(i64::MIN)),
            Err(CanonicalError::UnsafeInteger(_))
        ));
    }

    #[test]
    fn refuses_deep_nesting() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH {
            v = json!([v]);
        }
        assert!(to_string(&v).is_ok());
        assert_eq!(to_string(&json!([v])), Err(CanonicalError::TooDeep));
    }

    #[test]
    fn output_parses_back_to_the_same_value() {
        let v = json!({"k": ["\u{1}x", 1.25, -3, {"b": [], "a": {}}], "t": "\u{10ffff}"});
        let text = canon(v.clone());
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }
}
