//! [`AssumeRoleInput`]: `AssumeRole` parameters checked against every limit STS documents, before
//! any request is made; [`SendKeyInput`]: the same for EC2 Instance Connect's `SendSSHPublicKey`.
//! Pure: no I/O.
//!
//! This is the one home of STS's rules: the role catalog calls the same `check_*` functions when
//! it loads (counting the [`RESERVED_TAG_KEYS`] the broker adds), so a catalog that loads never
//! fails at grant time for a rule written here.
//!
//! SECURITY: nothing is dropped or shortened to make an input fit. A tag that breaks a rule fails
//! the whole grant with an error naming the field, because a silently missing tag can widen what
//! an attribute-based policy allows.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::names::{SessionName, SourceIdentity, is_name_char};

/// The parameters of one `AssumeRole` call, as the broker assembles them. Not yet checked: turn
/// them into an [`AssumeRoleInput`] with [`AssumeRoleInput::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleParams {
    /// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`, from the role catalog.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: SessionName,
    /// `SourceIdentity`.
    pub source_identity: SourceIdentity,
    /// `DurationSeconds`, 900..=43200 (the role's own maximum is checked by policy, not here).
    pub duration_secs: u32,
    /// Session tags, at most 50.
    pub tags: Vec<SessionTag>,
    /// Keys of `tags` that pass on to chained sessions.
    pub transitive_tag_keys: Vec<String>,
    /// An inline session policy (a JSON object) that narrows the role further.
    pub session_policy: Option<String>,
    /// Managed policies that narrow the role further, at most 10.
    pub policy_arns: Vec<String>,
    /// `ExternalId`, when the role's trust policy asks for one.
    pub external_id: Option<String>,
}

/// A session tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTag {
    /// 1..=128 characters; unique among the tags ignoring case; never starts with `aws:`.
    pub key: String,
    /// 0..=256 characters.
    pub value: String,
}

impl SessionTag {
    /// A tag from a key and a value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> SessionTag {
        SessionTag {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// `AssumeRole` parameters that STS will accept. The only way to build one is
/// [`AssumeRoleInput::new`], so every [`super::Aws`] implementation receives checked input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleInput(AssumeRoleParams);

impl AssumeRoleInput {
    /// Checks `params` against STS's limits.
    ///
    /// # Errors
    ///
    /// The first rule broken, naming the field (`tags[3].key`, `duration_secs`, ...).
    pub fn new(params: AssumeRoleParams) -> Result<AssumeRoleInput, InputError> {
        check_role_arn(&params.role_arn)?;
        check_duration(params.duration_secs)?;
        check_tags(&params.tags, &params.transitive_tag_keys)?;
        if let Some(policy) = &params.session_policy {
            check_session_policy(policy)?;
        }
        check_policy_arns(&params.policy_arns)?;
        if let Some(external_id) = &params.external_id {
            check_external_id(external_id)?;
        }
        Ok(AssumeRoleInput(params))
    }

    /// The checked parameters.
    pub fn params(&self) -> &AssumeRoleParams {
        &self.0
    }
}

/// The parameters of one EC2 Instance Connect `SendSSHPublicKey` call, as the broker assembles
/// them from the catalog and a validated key. Not yet checked: turn them into a [`SendKeyInput`]
/// with [`SendKeyInput::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendKeyParams {
    /// The region the instance lives in (the client is pointed there for this call).
    pub region: String,
    /// `InstanceId`: `i-` and 8 to 17 lowercase hex digits.
    pub instance_id: String,
    /// `InstanceOSUser`: `[a-z_][a-z0-9_-]{0,31}`.
    pub os_user: String,
    /// `SSHPublicKey`: one OpenSSH public key line, `type base64` without a comment.
    pub public_key: String,
    /// `AvailabilityZone`, when the catalog names it.
    pub availability_zone: Option<String>,
}

/// `SendSSHPublicKey` parameters that EC2 Instance Connect will accept. The only way to build one
/// is [`SendKeyInput::new`], so every [`super::Aws`] implementation receives checked input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendKeyInput(SendKeyParams);

impl SendKeyInput {
    /// Checks `params` against EC2 Instance Connect's documented limits.
    ///
    /// # Errors
    ///
    /// The first rule broken, naming the field. The message never quotes the key.
    pub fn new(params: SendKeyParams) -> Result<SendKeyInput, InputError> {
        if !is_region(&params.region) {
            return Err(InputError::new(
                "region",
                "is not a region such as `eu-west-1`",
            ));
        }
        if !is_instance_id(&params.instance_id) {
            return Err(InputError::new(
                "instance_id",
                "is not `i-` and 8 to 17 lowercase hex digits",
            ));
        }
        if !crate::ssh::is_os_user(&params.os_user) {
            return Err(InputError::new(
                "os_user",
                "is not a user name of the form `[a-z_][a-z0-9_-]{0,31}`",
            ));
        }
        check_public_key_line(&params.public_key)?;
        if let Some(zone) = &params.availability_zone
            && !is_availability_zone(zone)
        {
            return Err(InputError::new(
                "availability_zone",
                "is not an availability zone such as `eu-west-1a`",
            ));
        }
        Ok(SendKeyInput(params))
    }

    /// The checked parameters.
    pub fn params(&self) -> &SendKeyParams {
        &self.0
    }
}

/// The session tag that names the grant in CloudTrail; the broker adds it to every session.
pub const GRANT_TAG: &str = "latchkey-grant";

/// The session tag that names the break-glass request a session was issued through.
pub const REQUEST_TAG: &str = "latchkey-request";

/// The session tag that carries the ticket of that break-glass request.
pub const TICKET_TAG: &str = "latchkey-ticket";

/// Session tag keys the broker sets itself: [`GRANT_TAG`] on every session, [`REQUEST_TAG`] and
/// [`TICKET_TAG`] on sessions issued through a break-glass request. A catalog may not use them,
/// and its tag count leaves room for all of them.
pub const RESERVED_TAG_KEYS: [&str; 3] = [GRANT_TAG, REQUEST_TAG, TICKET_TAG];

/// A parameter STS would refuse. The message names the field and the rule; it quotes at most the
/// offending character, never a whole value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {problem}")]
pub struct InputError {
    field: String,
    problem: String,
}

impl InputError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> InputError {
        InputError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The parameter at fault, such as `tags[3].key` or `duration_secs`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it, without the field's name.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// Checks a role ARN: an IAM `role/` ARN in a 12-digit account.
///
/// # Errors
///
/// The rule broken, naming `role_arn`.
pub fn check_role_arn(arn: &str) -> Result<(), InputError> {
    const FIELD: &str = "role_arn";
    check_len(FIELD, arn, ARN_LEN)?;
    let (account, resource) =
        iam_arn(arn).ok_or_else(|| InputError::new(FIELD, "is not an iam arn"))?;
    if account == "aws" {
        return Err(InputError::new(FIELD, "needs a 12-digit account"));
    }
    let name = resource
        .strip_prefix("role/")
        .ok_or_else(|| InputError::new(FIELD, "is not a role arn"))?;
    check_iam_path_and_name(FIELD, name)
}

/// Checks `DurationSeconds`: 900..=43200.
///
/// # Errors
///
/// The rule broken, naming `duration_secs`.
pub fn check_duration(secs: u32) -> Result<(), InputError> {
    if DURATION_SECS.contains(&secs) {
        Ok(())
    } else {
        Err(InputError::new(
            "duration_secs",
            format!("{secs} is outside 900..=43200"),
        ))
    }
}

fn check_tags(tags: &[SessionTag], transitive: &[String]) -> Result<(), InputError> {
    check_tag_count("tags", tags.len())?;
    let mut seen = HashSet::new();
    for (i, tag) in tags.iter().enumerate() {
        let field = format!("tags[{i}].key");
        check_tag_key(&field, &tag.key)?;
        if !seen.insert(tag.key.to_lowercase()) {
            return Err(InputError::new(
                field,
                "repeats another key (keys ignore case)",
            ));
        }
        check_tag_value(&format!("tags[{i}].value"), &tag.value)?;
    }
    let mut seen_transitive = HashSet::new();
    for (i, key) in transitive.iter().enumerate() {
        let field = format!("transitive_tag_keys[{i}]");
        // SECURITY: exact match, so a transitive key never names a tag only up to case.
        if !tags.iter().any(|tag| tag.key == *key) {
            return Err(InputError::new(field, "is not the key of a session tag"));
        }
        if !seen_transitive.insert(key.as_str()) {
            return Err(InputError::new(field, "is listed twice"));
        }
    }
    Ok(())
}

/// Checks a number of session tags: at most [`MAX_TAGS`].
///
/// # Errors
///
/// The rule broken, naming `field`.
pub fn check_tag_count(field: &str, count: usize) -> Result<(), InputError> {
    if count > MAX_TAGS {
        return Err(InputError::new(
            field,
            format!("{count} tags, at most {MAX_TAGS} allowed"),
        ));
    }
    Ok(())
}

/// Checks a session tag key: 1..=128 characters of STS's tag pattern, not starting with `aws:`.
///
/// # Errors
///
/// The rule broken, naming `field`.
pub fn check_tag_key(field: &str, key: &str) -> Result<(), InputError> {
    check_len(field, key, TAG_KEY_LEN)?;
    check_tag_chars(field, key)?;
    if key.to_lowercase().starts_with("aws:") {
        return Err(InputError::new(
            field,
            "starts with the reserved prefix `aws:`",
        ));
    }
    Ok(())
}

/// Checks a session tag value: 0..=256 characters of STS's tag pattern.
///
/// # Errors
///
/// The rule broken, naming `field`.
pub fn check_tag_value(field: &str, value: &str) -> Result<(), InputError> {
    check_len(field, value, TAG_VALUE_LEN)?;
    check_tag_chars(field, value)
}

/// Checks an inline session policy: a JSON object of at most [`MAX_POLICY_BYTES`] bytes.
///
/// # Errors
///
/// The rule broken, naming `session_policy`.
pub fn check_session_policy(policy: &str) -> Result<(), InputError> {
    const FIELD: &str = "session_policy";
    if policy.len() > MAX_POLICY_BYTES {
        return Err(InputError::new(
            FIELD,
            format!(
                "is {} bytes, at most {MAX_POLICY_BYTES} allowed",
                policy.len()
            ),
        ));
    }
    match serde_json::from_str::<serde_json::Value>(policy) {
        Ok(value) if value.is_object() => Ok(()),
        Ok(_) => Err(InputError::new(FIELD, "is not a json object")),
        Err(_) => Err(InputError::new(FIELD, "is not valid json")),
    }
}

/// Checks managed session policy ARNs: at most [`MAX_POLICY_ARNS`] IAM `policy/` ARNs.
///
/// # Errors
///
/// The first rule broken, naming `policy_arns` or `policy_arns[i]`.
pub fn check_policy_arns(arns: &[String]) -> Result<(), InputError> {
    if arns.len() > MAX_POLICY_ARNS {
        return Err(InputError::new(
            "policy_arns",
            format!("{} arns, at most {MAX_POLICY_ARNS} allowed", arns.len()),
        ));
    }
    for (i, arn) in arns.iter().enumerate() {
        let field = format!("policy_arns[{i}]");
        check_len(&field, arn, ARN_LEN)?;
        let (_, resource) =
            iam_arn(arn).ok_or_else(|| InputError::new(field.as_str(), "is not an iam arn"))?;
        let name = resource
            .strip_prefix("policy/")
            .ok_or_else(|| InputError::new(field.as_str(), "is not a policy arn"))?;
        check_iam_path_and_name(&field, name)?;
    }
    Ok(())
}

/// Checks an `ExternalId`: 2..=1224 characters of `[\w+=,.@:/-]`.
///
/// # Errors
///
/// The rule broken, naming `external_id`.
pub fn check_external_id(external_id: &str) -> Result<(), InputError> {
    const FIELD: &str = "external_id";
    check_len(FIELD, external_id, EXTERNAL_ID_LEN)?;
    match external_id
        .chars()
        .find(|&c| !(is_name_char(c) || c == ':' || c == '/'))
    {
        Some(c) => Err(InputError::new(FIELD, format!("contains {}", quoted(c)))),
        None => Ok(()),
    }
}

/// The account and resource of `arn:PARTITION:iam::ACCOUNT:RESOURCE`, where ACCOUNT is 12 digits
/// or `aws` (AWS managed policies).
fn iam_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let partition_ok = !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    let account_ok =
        account == "aws" || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    (prefix == "arn" && partition_ok && service == "iam" && region.is_empty() && account_ok)
        .then_some((account, resource))
}

/// `PATH/NAME` of an IAM role or policy: `/`-separated parts of `[\w+=,.@-]`, the name not empty.
fn check_iam_path_and_name(field: &str, path_and_name: &str) -> Result<(), InputError> {
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    if name.is_empty() {
        return Err(InputError::new(field, "has an empty name"));
    }
    match path_and_name
        .chars()
        .find(|&c| !(is_name_char(c) || c == '/'))
    {
        Some(c) => Err(InputError::new(field, format!("contains {}", quoted(c)))),
        None => Ok(()),
    }
}

/// Length in characters, as STS counts it.
fn check_len(
    field: &str,
    value: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), InputError> {
    let len = value.chars().count();
    if range.contains(&len) {
        Ok(())
    } else {
        Err(InputError::new(
            field,
            format!(
                "has {len} characters, allowed {}..={}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// STS's tag pattern `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`.
fn check_tag_chars(field: &str, value: &str) -> Result<(), InputError> {
    static TAG_CHAR: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"\A[\p{L}\p{Z}\p{N}_.:/=+\-@]\z").ok());
    // INVARIANT: the pattern is a constant that the tests compile; should it ever fail to compile,
    // every tag is refused rather than accepted.
    let Some(tag_char) = TAG_CHAR.as_ref() else {
        return Err(InputError::new(field, "cannot be checked"));
    };
    // ASCII (nearly every tag) is classified without the regex, which dominated a grant's input
    // checks; other characters still go through the Unicode classes.
    let allowed = |c: char| match ascii_tag_char(c) {
        Some(allowed) => allowed,
        None => tag_char.is_match(c.encode_utf8(&mut [0u8; 4])),
    };
    match value.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(InputError::new(field, format!("contains {}", quoted(c)))),
        None => Ok(()),
    }
}

/// Whether an ASCII character matches STS's tag pattern: `\p{L}` and `\p{N}` are the letters and
/// digits, `\p{Z}` is the space (tab and line breaks are `Cc`, not `Z`); `None` for non-ASCII.
fn ascii_tag_char(c: char) -> Option<bool> {
    c.is_ascii().then(|| {
        c.is_ascii_alphanumeric()
            || matches!(c, ' ' | '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
    })
}

/// A character for an error message: printable ones in backticks, others as a code point.
fn quoted(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("`{c}`")
    }
}

const ARN_LEN: std::ops::RangeInclusive<usize> = 20..=2048;
const DURATION_SECS: std::ops::RangeInclusive<u32> = 900..=43_200;
const EXTERNAL_ID_LEN: std::ops::RangeInclusive<usize> = 2..=1224;
/// Managed session policies STS accepts at most.
pub const MAX_POLICY_ARNS: usize = 10;
/// The longest inline session policy STS accepts, in bytes (we count bytes, the stricter reading
/// of STS's "2,048 characters", so a policy that passes here is never too long there).
pub const MAX_POLICY_BYTES: usize = 2048;
/// Session tags STS accepts at most, including the broker's own.
pub const MAX_TAGS: usize = 50;
const TAG_KEY_LEN: std::ops::RangeInclusive<usize> = 1..=128;
const TAG_VALUE_LEN: std::ops::RangeInclusive<usize> = 0..=256;

/// `SSHPublicKey`: 80..=4096 characters (EC2 Instance Connect's limits) of `TYPE BASE64`, the
/// type one EC2 Instance Connect accepts.
fn check_public_key_line(line: &str) -> Result<(), InputError> {
    const FIELD: &str = "public_key";
    // SECURITY: the message states the rule and at most a length, never the key.
    let len = line.chars().count();
    if !SSH_PUBLIC_KEY_LEN.contains(&len) {
        return Err(InputError::new(
            FIELD,
            format!(
                "has {len} characters, allowed {}..={}",
                SSH_PUBLIC_KEY_LEN.start(),
                SSH_PUBLIC_KEY_LEN.end()
            ),
        ));
    }
    let well_formed = line.split_once(' ').is_some_and(|(kind, data)| {
        SSH_KEY_TYPES.contains(&kind)
            && !data.is_empty()
            && data
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    });
    if well_formed {
        Ok(())
    } else {
        Err(InputError::new(
            FIELD,
            "is not one `ssh-ed25519` or `ssh-rsa` key line without a comment",
        ))
    }
}

/// `i-` and 8 to 17 lowercase hex digits (`^i-[0-9a-f]{8,17}$`). The catalog checks its
/// targets with this too, so a target that loads never fails at push time for its instance id.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Parts of lowercase letters and digits joined by `-`, at least three, the last all digits
/// (`eu-west-1`, `us-gov-west-1`). The catalog checks its targets with this too.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    s.len() <= 32
        && parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// EC2 Instance Connect's `^(\w+-){2,3}\d+\w+$`, 6..=32 characters: a region and a zone letter
/// (`eu-west-1a`, `us-east-1-bos-1a` is not one). The catalog checks its targets with this
/// too, so a zone it accepts is one EC2 Instance Connect accepts.
pub fn is_availability_zone(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let word = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let Some((last, firsts)) = parts.split_last() else {
        return false;
    };
    let digits = last.bytes().take_while(u8::is_ascii_digit).count();
    (6..=32).contains(&s.len())
        && (2..=3).contains(&firsts.len())
        && firsts.iter().all(|p| word(p))
        && digits > 0
        && last.len() > digits
        && word(last)
}

/// The key types EC2 Instance Connect accepts (and latchkey's key validation lets through).
const SSH_KEY_TYPES: [&str; 2] = ["ssh-ed25519", "ssh-rsa"];
/// `SSHPublicKey`'s length limits, in characters. An ed25519 key line is exactly 80.
const SSH_PUBLIC_KEY_LEN: std::ops::RangeInclusive<usize> = 80..=4096;

#[cfg(test)]
#[path = "input/tests.rs"]
mod tests;
