//! Anchors: link hashes known from outside the store, to check the stored chain against.
//!
//! The store alone cannot prove its own tail: whoever can write to it can delete the newest
//! records and rewind the head row, or empty it and reset the head, and the chain that is left
//! still links. What the store cannot rewrite is a copy held elsewhere: the JSON-lines stream the
//! sink wrote (what a SIEM holds), or a head `SEQ:HASH` noted down from elsewhere. Each such
//! `(seq, hash)` is an [`Anchor`]: the chain must hold a record `seq` whose hash is `hash`.
//!
//! Pure: reads lines from any [`BufRead`]; no tokio, no store.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

use serde::Deserialize;

use super::chain::ChainHash;

/// One `(seq, hash)` the chain must contain, and where it was learned.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Anchor {
    /// The record's sequence number (1 or more).
    pub seq: i64,
    /// The record's link hash.
    pub hash: ChainHash,
    /// Where it came from.
    pub source: AnchorSource,
}

/// Where an [`Anchor`] came from, for messages.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum AnchorSource {
    /// The head given on the command line (`--head SEQ:HASH`).
    Head,
    /// A line of the sink stream, counted from 1.
    StreamLine(u64),
}

/// Every anchor, by `seq`.
#[derive(Clone, Debug, Default)]
pub struct Anchors {
    by_seq: BTreeMap<i64, Anchor>,
}

/// Why anchors could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The same `seq` comes with two different hashes: the stream itself records a fork or a
    /// rewrite, and no chain can match both.
    #[error("seq {seq} has two different hashes: {first} and {second}")]
    Conflict {
        /// The sequence number.
        seq: i64,
        /// Where the first hash came from.
        first: AnchorSource,
        /// Where the second hash came from.
        second: AnchorSource,
    },
    /// `--head` is not `SEQ:HASH`.
    #[error("head must be `SEQ:HASH` (seq 1 or more, 64 hex digits), not `{0}`")]
    Head(String),
    /// A stream line is not an audit record.
    #[error("stream line {line} is not an audit record: {reason}")]
    Line {
        /// The line number, from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream could not be read.
    #[error("cannot read the stream: {0}")]
    Read(#[from] std::io::Error),
}

/// The part of a sink line an anchor needs; the other fields are ignored.
#[derive(Deserialize)]
struct StreamLine {
    seq: i64,
    hash: ChainHash,
}

// === impl Anchors ===

impl Anchors {
    /// Adds `anchor`. The same `seq` with the same hash is kept once.
    ///
    /// # Errors
    ///
    /// [`AnchorError::Conflict`] if `seq` is already anchored to a different hash.
    pub fn add(&mut self, anchor: Anchor) -> Result<(), AnchorError> {
        match self.by_seq.get(&anchor.seq) {
            Some(known) if known.hash != anchor.hash => Err(AnchorError::Conflict {
                seq: anchor.seq,
                first: known.source,
                second: anchor.source,
            }),
            Some(_) => Ok(()),
            None => {
                self.by_seq.insert(anchor.seq, anchor);
                Ok(())
            }
        }
    }

    /// Adds one anchor per line of a sink stream (JSON lines, as the sink writes them) and
    /// returns how many lines were read. Lines may come in any order and from several servers
    /// sharing one chain.
    ///
    /// # Errors
    ///
    /// [`AnchorError::Line`] for a line that is not a record with a `seq` of 1 or more and a
    /// 64-hex-digit `hash`, [`AnchorError::Conflict`] for one `seq` with two hashes, and
    /// [`AnchorError::Read`] if reading fails.
    pub fn read_stream(&mut self, reader: impl BufRead) -> Result<u64, AnchorError> {
        let mut count = 0_u64;
        for line in reader.lines() {
            count += 1;
            let line = line?;
            let bad = |reason: String| AnchorError::Line {
                line: count,
                reason,
            };
            let parsed: StreamLine =
                serde_json::from_str(&line).map_err(|err| bad(err.to_string()))?;
            if parsed.seq < 1 {
                return Err(bad(format!("seq `{}` is not 1 or more", parsed.seq)));
            }
            self.add(Anchor {
                seq: parsed.seq,
                hash: parsed.hash,
                source: AnchorSource::StreamLine(count),
            })?;
        }
        Ok(count)
    }

    /// The anchor for `seq`, if any.
    pub fn get(&self, seq: i64) -> Option<&Anchor> {
        self.by_seq.get(&seq)
    }

    /// The anchor with the highest `seq`.
    pub fn last(&self) -> Option<&Anchor> {
        self.by_seq.values().next_back()
    }

    /// How many distinct `seq`s are anchored.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// `true` when nothing is anchored.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }
}

// === impl Anchor ===

impl Anchor {
    /// Parses a head given as `SEQ:HASH` (hash as 64 hex digits, lowercase as printed).
    ///
    /// # Errors
    ///
    /// [`AnchorError::Head`] if the text is not of that form or `seq` is below 1.
    pub fn parse_head(text: &str) -> Result<Self, AnchorError> {
        let bad = || AnchorError::Head(text.to_owned());
        let (seq, hash) = text.split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        if seq < 1 {
            return Err(bad());
        }
        let hash = ChainHash::from_hex(hash).ok_or_else(bad)?;
        Ok(Self {
            seq,
            hash,
            source: AnchorSource::Head,
        })
    }
}

impl fmt::Display for AnchorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head => f.write_str("the given head"),
            Self::StreamLine(line) => write!(f, "stream line {line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: i64, byte: u8) -> String {
        format!(
            r#"{{"seq":{seq},"prev_hash":"{}","hash":"{}","event":"x"}}"#,
            "00".repeat(32),
            format!("{byte:02x}").repeat(32)
        )
    }

    #[test]
    fn reads_stream_lines_in_any_order_and_keeps_duplicates_once() {
        let text = [line(2, 2), line(1, 1), line(2, 2)].join("\n");
        let mut anchors = Anchors::default();
        assert_eq!(anchors.read_stream(text.as_bytes()).unwrap(), 3);
        assert_eq!(anchors.len(), 2);
        let last = anchors.last().unwrap();
        assert_eq!((last.seq, last.source), (2, AnchorSource::StreamLine(1)));
        assert_eq!(anchors.get(1).unwrap().hash, ChainHash::from_bytes([1; 32]));
    }

    #[test]
    fn refuses_conflicts_and_lines_that_are_not_records() {
        let mut anchors = Anchors::default();
        let text = [line(1, 1), line(1, 9)].join("\n");
        let err = anchors.read_stream(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seq 1 has two different hashes: stream line 1 and stream line 2"
        );
        for (bad, why) in [
            ("not json", "expected"),
            (r#"{"seq":1}"#, "missing field `hash`"),
            (&line(0, 1), "seq `0` is not 1 or more"),
            (r#"{"seq":1,"hash":"abcd"}"#, "hex"),
        ] {
            let err = Anchors::default().read_stream(bad.as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("stream line 1 is not an audit record") && text.contains(why),
                "{text}"
            );
        }
    }

    #[test]
    fn parses_a_head() {
        let hash = "ab".repeat(32);
        let head = Anchor::parse_head(&format!("42:{hash}")).unwrap();
        assert_eq!((head.seq, head.hash.to_hex()), (42, hash.clone()));
        for bad in [
            String::new(),
            "42".to_owned(),
            format!("0:{hash}"),
            format!("-1:{hash}"),
            "42:abcd".to_owned(),
            format!("x:{hash}"),
        ] {
            assert!(
                matches!(Anchor::parse_head(&bad), Err(AnchorError::Head(_))),
                "{bad}"
            );
        }
    }
}
