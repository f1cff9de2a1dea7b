//! SIDs (`src/sid.rs`): which strings each SID type accepts and why it refuses the others,
//! serde and text round trips, and `check_account_sid`, including under concurrency with a
//! different expected account on every thread (the race of `PROTOCOL.md` §5, PR 7704).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

mod common;

use std::sync::Barrier;

use proptest::prelude::*;
use streamguard::sid::{
    AccountMismatch, AccountSid, CallSid, SID_LEN, SidError, StreamSid, check_account_sid,
};

/// The SID kinds, so one table serves all three types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Account,
    Call,
    Stream,
}

const KINDS: [Kind; 3] = [Kind::Account, Kind::Call, Kind::Stream];

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Account => "AC",
            Kind::Call => "CA",
            Kind::Stream => "MZ",
        }
    }

    /// Parses with the type of this kind; on success returns what `as_str` gives back.
    fn parse(self, s: &str) -> Result<String, SidError> {
        match self {
            Kind::Account => AccountSid::parse(s).map(|v| v.as_str().to_owned()),
            Kind::Call => CallSid::parse(s).map(|v| v.as_str().to_owned()),
            Kind::Stream => StreamSid::parse(s).map(|v| v.as_str().to_owned()),
        }
    }

    /// Parses through serde (`Deserialize`), as a JSON string.
    fn parse_json(self, s: &str) -> Result<String, serde_json::Error> {
        let json = serde_json::Value::String(s.to_owned()).to_string();
        match self {
            Kind::Account => serde_json::from_str::<AccountSid>(&json).map(|v| v.to_string()),
            Kind::Call => serde_json::from_str::<CallSid>(&json).map(|v| v.to_string()),
            Kind::Stream => serde_json::from_str::<StreamSid>(&json).map(|v| v.to_string()),
        }
    }
}

/// Digit strings after the prefix, and whether they are valid. `{p}` is not used here: the
/// prefix is prepended per kind.
const DIGITS: &[(&str, Result<(), SidError>)] = &[
    ("0123456789abcdef0123456789abcdef", Ok(())),
    ("00000000000000000000000000000000", Ok(())),
    ("ffffffffffffffffffffffffffffffff", Ok(())),
    // Twilio's API reference gives `[0-9a-fA-F]{32}`: uppercase digits are accepted.
    ("0123456789ABCDEF0123456789ABCDEF", Ok(())),
    ("0123456789abcdef0123456789abcdeg", Err(SidError::NotHex)),
    ("g123456789abcdef0123456789abcdef", Err(SidError::NotHex)),
    ("0123456789abcdef 123456789abcdef", Err(SidError::NotHex)),
    ("0123456789abcdef0123456789abcde\0", Err(SidError::NotHex)),
    ("0123456789abcdef0123456789abcd-f", Err(SidError::NotHex)),
    ("+123456789abcdef0123456789abcdef", Err(SidError::NotHex)),
    // 30 hex digits and a two-byte UTF-8 character: 34 bytes, not hex.
    ("0123456789abcdef0123456789abcdé", Err(SidError::NotHex)),
    // Fullwidth digit: three bytes, so the length is wrong first.
    ("0123456789abcdef0123456789abcde０", Err(SidError::Length)),
    ("0123456789abcdef0123456789abcde", Err(SidError::Length)),
    ("0123456789abcdef0123456789abcdef0", Err(SidError::Length)),
    ("", Err(SidError::Length)),
    (" 0123456789abcdef0123456789abcdef", Err(SidError::Length)),
    ("0123456789abcdef0123456789abcdef\n", Err(SidError::Length)),
];

/// Whole strings that are invalid for every kind, with the error.
const WHOLE: &[(&str, SidError)] = &[
    ("", SidError::Length),
    ("AC", SidError::Length),
    ("CA", SidError::Length),
    ("MZ", SidError::Length),
    ("0123456789abcdef0123456789abcdef", SidError::Length),
    ("XX0123456789abcdef0123456789abcdef", SidError::Prefix),
    ("  0123456789abcdef0123456789abcdef", SidError::Prefix),
    ("SM0123456789abcdef0123456789abcdef", SidError::Prefix),
    ("PN0123456789abcdef0123456789abcdef", SidError::Prefix),
];

#[test]
fn digit_table_for_every_kind() {
    for kind in KINDS {
        for (digits, expected) in DIGITS {
            let s = format!("{}{digits}", kind.prefix());
            let got = kind.parse(&s);
            match expected {
                Ok(()) => assert_eq!(got.as_deref(), Ok(s.as_str()), "{kind:?} {s:?}"),
                Err(e) => assert_eq!(got, Err(*e), "{kind:?} {s:?}"),
            }
            // serde agrees with `parse`.
            assert_eq!(
                kind.parse_json(&s).is_ok(),
                expected.is_ok(),
                "serde {kind:?} {s:?}"
            );
            // `FromStr` agrees with `parse`.
            let from_str = match kind {
                Kind::Account => s.parse::<AccountSid>().map(|_| ()),
                Kind::Call => s.parse::<CallSid>().map(|_| ()),
                Kind::Stream => s.parse::<StreamSid>().map(|_| ()),
            };
            assert_eq!(from_str, *expected, "FromStr {kind:?} {s:?}");
        }
    }
}

#[test]
fn whole_string_table_for_every_kind() {
    for kind in KINDS {
        for (s, e) in WHOLE {
            assert_eq!(kind.parse(s), Err(*e), "{kind:?} {s:?}");
            assert!(kind.parse_json(s).is_err(), "serde {kind:?} {s:?}");
        }
    }
}

#[test]
fn each_type_refuses_the_other_prefixes() {
    const DIGITS_OK: &str = "0123456789abcdef0123456789abcdef";
    for kind in KINDS {
        for other in KINDS {
            let s = format!("{}{DIGITS_OK}", other.prefix());
            let expected = if kind == other {
                Ok(s.clone())
            } else {
                Err(SidError::Prefix)
            };
            assert_eq!(kind.parse(&s), expected, "{kind:?} given {s}");
        }
        // The prefix is case-sensitive.
        let lower = format!("{}{DIGITS_OK}", kind.prefix().to_ascii_lowercase());
        assert_eq!(kind.parse(&lower), Err(SidError::Prefix), "{lower}");
        let mixed = format!(
            "{}{}{DIGITS_OK}",
            &kind.prefix()[..1],
            kind.prefix()[1..].to_ascii_lowercase()
        );
        assert_eq!(kind.parse(&mixed), Err(SidError::Prefix), "{mixed}");
    }
}

#[test]
fn serde_rejects_non_strings() {
    for json in ["null", "1", "[]", "{}", "true"] {
        assert!(serde_json::from_str::<AccountSid>(json).is_err(), "{json}");
        assert!(serde_json::from_str::<CallSid>(json).is_err(), "{json}");
        assert!(serde_json::from_str::<StreamSid>(json).is_err(), "{json}");
    }
}

#[test]
fn text_forms_round_trip() {
    let s = common::ACCOUNT;
    let a = AccountSid::parse(s).unwrap();
    assert_eq!(a.as_str(), s);
    assert_eq!(a.to_string(), s);
    assert_eq!(a.as_bytes(), s.as_bytes());
    assert_eq!(format!("{a:?}"), format!("AccountSid({s})"));
    assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{s}\""));
    assert_eq!(AccountSid::PREFIX, "AC");
    assert_eq!(CallSid::PREFIX, "CA");
    assert_eq!(StreamSid::PREFIX, "MZ");
    assert_eq!(SID_LEN, 34);
}

/// Pairs for `check_account_sid`, with whether they match: equality is byte equality (a SID
/// that differs only in the case of a hex digit is another account).
const ACCOUNT_PAIRS: &[(&str, &str, bool)] = &[
    (common::ACCOUNT, common::ACCOUNT, true),
    (common::ACCOUNT, common::OTHER_ACCOUNT, false),
    (
        "AC0123456789abcdef0123456789abcdef",
        "AC0123456789abcdef0123456789abcdee",
        false,
    ),
    (
        "AC0123456789abcdef0123456789abcdef",
        "AC1123456789abcdef0123456789abcdef",
        false,
    ),
    (
        "AC0123456789abcdef0123456789abcdef",
        "AC0123456789ABCDEF0123456789ABCDEF",
        false,
    ),
];

#[test]
fn check_account_sid_table() {
    for (expected, presented, matches) in ACCOUNT_PAIRS {
        let e = AccountSid::parse(expected).unwrap();
        let p = AccountSid::parse(presented).unwrap();
        let want = if *matches {
            Ok(())
        } else {
            Err(AccountMismatch)
        };
        assert_eq!(check_account_sid(&e, &p), want, "{expected} vs {presented}");
        // Symmetric.
        assert_eq!(check_account_sid(&p, &e), want, "{presented} vs {expected}");
    }
    // The error names neither account: it holds no data at all. (Searching the `Debug` of
    // this unit struct for the SIDs could not fail.)
    common::assert_holds_no_data::<AccountMismatch>();
}

/// Many threads, each with its own expected account, check a mix of presented accounts at
/// the same moment. Every result must equal the answer computed by string comparison on one
/// thread: nothing one thread expects can leak into another's check.
#[test]
fn concurrent_checks_do_not_cross_over() {
    const THREADS: u64 = 16;
    const ROUNDS: usize = 50;
    let accounts: Vec<AccountSid> = (0..THREADS).map(common::nth_account).collect();
    let accounts = &accounts;
    // What each thread is shown: every account, in a thread-specific rotation, so at any
    // instant some threads see their own account and others see a neighbour's.
    let presented = |t: usize, i: usize| &accounts[(t + i) % accounts.len()];
    let presented = &presented;
    let barrier = Barrier::new(usize::try_from(THREADS).unwrap());
    std::thread::scope(|scope| {
        for (t, expected) in accounts.iter().enumerate() {
            let barrier = &barrier;
            scope.spawn(move || {
                for _ in 0..ROUNDS {
                    barrier.wait();
                    for i in 0..accounts.len() {
                        let p = presented(t, i);
                        let got = check_account_sid(expected, p).is_ok();
                        let want = expected.as_str() == p.as_str();
                        assert_eq!(got, want, "thread {t} expected {expected} given {p}");
                    }
                }
            });
        }
    });
}

/// Whatever parses as a SID is 34 bytes of ASCII. Random text never parses, so the inputs
/// are SID-shaped: a prefix (right, wrong or missing) and 30 to 34 characters that are hex
/// digits, other ASCII or multibyte; the test fails if none of them parsed.
#[test]
fn whatever_parses_is_34_bytes_of_ascii() {
    let shaped = "(AC|CA|MZ|ac|)([0-9a-fA-F]{32}|[0-9a-fA-Fg-zé ]{30,34})";
    let parsed = common::run_property(file!(), shaped, |s| {
        let mut any = false;
        for kind in KINDS {
            if let Ok(text) = kind.parse(&s) {
                prop_assert_eq!(text.len(), SID_LEN);
                prop_assert!(text.is_ascii());
                any = true;
            }
        }
        Ok(any)
    });
    assert!(parsed > 0, "no generated text parsed as a SID");
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// A string parses as a SID of a kind exactly when it is that kind's prefix followed by
    /// 32 ASCII hex digits; and then `as_str` gives back the same string.
    #[test]
    fn parse_accepts_exactly_prefix_and_32_hex(s in "(AC|CA|MZ|ac|XX|)[0-9a-fA-Fg-z ]{30,34}") {
        for kind in KINDS {
            let valid = s.len() == SID_LEN
                && s.starts_with(kind.prefix())
                && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
            let got = kind.parse(&s);
            prop_assert_eq!(got.is_ok(), valid, "{:?} {:?}", kind, s);
            if let Ok(text) = got {
                prop_assert_eq!(text, s.clone());
            }
        }
    }

    /// Parsing never panics on arbitrary text.
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        for kind in KINDS {
            let _ = kind.parse(&s);
        }
    }

    /// `check_account_sid` says "match" exactly when the two SIDs are the same string.
    #[test]
    fn check_is_string_equality(a in "[0-9a-f]{32}", b in "[0-9a-f]{32}", same in any::<bool>()) {
        let e = AccountSid::parse(&format!("AC{a}")).unwrap();
        let p_text = if same { format!("AC{a}") } else { format!("AC{b}") };
        let p = AccountSid::parse(&p_text).unwrap();
        prop_assert_eq!(check_account_sid(&e, &p).is_ok(), e.as_str() == p_text);
    }
}

/// The errors explain themselves: every reason a distinct message, the length one naming the
/// length a SID must have.
#[test]
fn errors_have_distinct_messages() {
    let messages: Vec<String> = [SidError::Length, SidError::Prefix, SidError::NotHex]
        .iter()
        .map(ToString::to_string)
        .chain([AccountMismatch.to_string()])
        .collect();
    common::assert_distinct_messages(&messages);
    assert!(
        messages[0].contains(&SID_LEN.to_string()),
        "{}",
        messages[0]
    );
}
