//! Twilio resource identifiers: `AccountSid` (`AC…`), `CallSid` (`CA…`), `StreamSid` (`MZ…`).
//!
//! A SID is a two-letter prefix followed by 32 hexadecimal digits. Twilio's API reference gives
//! the pattern `^CA[0-9a-fA-F]{32}$` (and the same for `AC`, `MZ`); in practice the digits are
//! lowercase. Construction validates the whole string; a value of these types is always
//! well formed. SIDs are identifiers, not secrets: they may be logged.
//!
//! [`check_account_sid`] compares an expected AccountSid with a presented one in constant time.
//! The expected value is an argument on every call, taken from immutable configuration: it is
//! never kept in state shared between connections (the race fixed in the public record,
//! `PROTOCOL.md` §5).

use std::fmt;

/// Total length of a SID: two prefix letters and 32 hex digits.
pub const SID_LEN: usize = 34;

/// Why a string is not a valid SID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SidError {
    /// The string is not exactly 34 bytes long.
    Length,
    /// The first two characters are not the expected prefix.
    Prefix,
    /// A character after the prefix is not a hexadecimal digit.
    NotHex,
}

impl fmt::Display for SidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length => write!(f, "SID is not {SID_LEN} characters long"),
            Self::Prefix => f.write_str("SID has the wrong prefix"),
            Self::NotHex => f.write_str("SID has a character that is not a hex digit"),
        }
    }
}

impl std::error::Error for SidError {}

fn parse_sid(prefix: &[u8; 2], s: &str) -> Result<[u8; SID_LEN], SidError> {
    let bytes: &[u8; SID_LEN] = s.as_bytes().try_into().map_err(|_| SidError::Length)?;
    let (head, digits) = bytes.split_at(2);
    if head != prefix {
        return Err(SidError::Prefix);
    }
    // Every digit checked, without an early exit: a loop the compiler vectorises (a
    // `streamSid` is checked on every media frame).
    if !digits.iter().fold(true, |ok, b| ok & b.is_ascii_hexdigit()) {
        return Err(SidError::NotHex);
    }
    Ok(*bytes)
}

macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name([u8; SID_LEN]);

        impl $name {
            /// The two-letter prefix every SID of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Validates `s`: the prefix, then exactly 32 hex digits.
            pub fn parse(s: &str) -> Result<Self, SidError> {
                let mut prefix = [0u8; 2];
                prefix.copy_from_slice(Self::PREFIX.as_bytes());
                parse_sid(&prefix, s).map(Self)
            }

            /// The SID as text.
            pub fn as_str(&self) -> &str {
                // Construction only admits ASCII, so this never fails; an empty string
                // would be the (unreachable) fallback rather than a panic.
                std::str::from_utf8(&self.0).unwrap_or_default()
            }

            /// The SID's bytes.
            pub fn as_bytes(&self) -> &[u8; SID_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = SidError;
            fn from_str(s: &str) -> Result<Self, SidError> {
                Self::parse(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Parsed from the string as the parser hands it over: no copy.
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a Twilio SID")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

sid_type!(
    /// A Twilio account: `AC` + 32 hex digits.
    AccountSid,
    "AC"
);
sid_type!(
    /// One phone call: `CA` + 32 hex digits.
    CallSid,
    "CA"
);
sid_type!(
    /// One media stream of a call: `MZ` + 32 hex digits.
    StreamSid,
    "MZ"
);

/// The presented AccountSid is not the expected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountMismatch;

impl fmt::Display for AccountMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountSid is not the configured account")
    }
}

impl std::error::Error for AccountMismatch {}

/// Checks that `presented` is the `expected` account, in constant time.
///
/// `expected` comes from immutable configuration and is passed on every call; nothing is
/// remembered between calls, so concurrent checks with different expectations cannot
/// interfere.
///
/// ```
/// use streamguard::sid::{check_account_sid, AccountSid};
/// let ours = AccountSid::parse("AC0123456789abcdef0123456789abcdef").unwrap();
/// let theirs = AccountSid::parse("ACffffffffffffffffffffffffffffffff").unwrap();
/// assert!(check_account_sid(&ours, &ours).is_ok());
/// assert!(check_account_sid(&ours, &theirs).is_err());
/// ```
pub fn check_account_sid(
    expected: &AccountSid,
    presented: &AccountSid,
) -> Result<(), AccountMismatch> {
    if constant_time_eq::constant_time_eq_n(&expected.0, &presented.0) {
        Ok(())
    } else {
        Err(AccountMismatch)
    }
}
