//! The reasons operators see: metric labels are a contract (README, "Metrics": dashboards and
//! alerts match on them), so each is pinned to its documented spelling here, written out by
//! hand rather than derived from the code; and every error's message, what the logs say, is
//! non-empty and tells its variants apart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // tests: a panic is a failure

use std::collections::HashSet;
use std::fmt::Display;

use streamguard::extract::ExtractError;
use streamguard::session::{Reason, UrlToken};
use streamguard::signature::SignatureError;
use streamguard::store::{RedeemError, RedeemRefusal, StoreError};
use streamguard::token::TokenError;
use streamguard::upgrade::{HandshakeError, UpgradeReject};
use streamguard::webhook::WebhookReject;
use streamguard::wire::frames::FrameError;
use streamguard::wire::twiml::{Field, TwimlError};

/// Every message non-empty and no two alike.
fn messages_are_distinct<E: Display>(what: &str, all: &[E]) {
    let messages: Vec<String> = all.iter().map(ToString::to_string).collect();
    for m in &messages {
        assert!(!m.trim().is_empty(), "{what}: an empty message");
    }
    let distinct: HashSet<&String> = messages.iter().collect();
    assert_eq!(distinct.len(), messages.len(), "{what}: {messages:?}");
}

#[test]
fn extract_labels_are_the_documented_ones() {
    let table = [
        (ExtractError::TargetTooLong, "token_target_too_long"),
        (ExtractError::Ambiguous, "token_ambiguous"),
        (ExtractError::Encoding, "token_bad_encoding"),
        (ExtractError::Empty, "token_empty"),
        (ExtractError::TooLong, "token_too_long"),
        (ExtractError::Conflict, "token_conflict"),
        (ExtractError::Missing, "token_missing"),
    ];
    for (e, label) in table {
        assert_eq!(e.as_str(), label);
    }
    messages_are_distinct("ExtractError", &table.map(|(e, _)| e));
}

#[test]
fn signature_labels_are_the_documented_ones() {
    let table = [
        (SignatureError::Missing, "signature_missing"),
        (SignatureError::Malformed, "signature_malformed"),
        (SignatureError::BadUrl, "signature_bad_url"),
        (
            SignatureError::BodyHashMissing,
            "signature_body_hash_missing",
        ),
        (
            SignatureError::BodyHashWithoutBody,
            "signature_body_hash_without_body",
        ),
        (
            SignatureError::BodyHashMismatch,
            "signature_body_hash_mismatch",
        ),
        (SignatureError::BodyWithParams, "signature_body_with_params"),
        (SignatureError::Mismatch, "signature_mismatch"),
    ];
    for (e, label) in table {
        assert_eq!(e.as_str(), label);
    }
    messages_are_distinct("SignatureError", &table.map(|(e, _)| e));
}

#[test]
fn frame_labels_are_the_documented_ones() {
    let table = [
        (FrameError::TooLarge, "frame_too_large"),
        (FrameError::Syntax, "frame_not_json"),
        (FrameError::Schema, "frame_invalid"),
        (FrameError::StreamSidMismatch, "frame_stream_sid_mismatch"),
    ];
    for (e, label) in table {
        assert_eq!(e.as_str(), label);
    }
    messages_are_distinct("FrameError", &table.map(|(e, _)| e));
}

/// A session's close reason is labelled by its own name, or by the error it wraps.
#[test]
fn session_reason_labels_are_the_documented_ones() {
    let table = [
        (Reason::Frame(FrameError::Syntax), "frame_not_json"),
        (Reason::Extract(ExtractError::Missing), "token_missing"),
        (Reason::AccountMismatch, "account_mismatch"),
        (Reason::Token(TokenError::BadMac), "token_bad_mac"),
        (
            Reason::Redeem(RedeemError::Refused(RedeemRefusal::TokenReused)),
            "token_replayed",
        ),
        (
            Reason::Redeem(RedeemError::Store(StoreError::Timeout)),
            "replay_store_unavailable",
        ),
        (Reason::StreamsFull, "streams_full"),
        (Reason::OutOfOrder, "event_out_of_order"),
        (Reason::StartTimeout, "start_timeout"),
        (Reason::EventBeforeStart, "event_before_start"),
        (Reason::UnexpectedConnected, "unexpected_connected"),
        (Reason::SecondStart, "second_start"),
        (Reason::StreamSidMismatch, "stream_sid_mismatch"),
        (Reason::Binary, "binary_frame"),
        (Reason::TooLarge, "message_too_large"),
        (Reason::ControlBeforeStart, "control_before_start"),
        (Reason::Malformed, "ws_malformed"),
    ];
    for (r, label) in table {
        assert_eq!(r.as_str(), label);
    }
    messages_are_distinct("Reason", &table.map(|(r, _)| r));
}

#[test]
fn refusal_messages_are_non_empty_and_distinct() {
    messages_are_distinct(
        "UpgradeReject",
        &[
            UpgradeReject::NotFound,
            UpgradeReject::Method,
            UpgradeReject::Handshake(HandshakeError::UpgradeHeader),
            UpgradeReject::Signature(SignatureError::Mismatch),
            UpgradeReject::PendingFull,
            UpgradeReject::PendingPerIpFull,
            UpgradeReject::StreamsFull,
        ],
    );
    messages_are_distinct(
        "WebhookReject",
        &[
            WebhookReject::Method,
            WebhookReject::TooLarge,
            WebhookReject::UnsupportedMediaType,
            WebhookReject::MalformedForm,
            WebhookReject::Signature(SignatureError::Mismatch),
            WebhookReject::Account,
            WebhookReject::CallSid,
            WebhookReject::CallAlreadyStreamed,
            WebhookReject::Store(StoreError::Unavailable),
            WebhookReject::Internal,
        ],
    );
    messages_are_distinct(
        "TwimlError",
        &[
            TwimlError::ForbiddenCharacter(Field::Url),
            TwimlError::UrlHasQuery,
            TwimlError::UrlHasFragment,
            TwimlError::UrlScheme,
            TwimlError::EmptyParameterName(0),
            TwimlError::DuplicateParameterName(0),
            TwimlError::TrackNotAllowed,
        ],
    );
}

/// `UrlToken`'s `Debug` says which case it is and never shows the token.
#[test]
fn url_token_debug_tells_the_cases_apart_and_hides_the_token() {
    let none = format!("{:?}", UrlToken::from_target("/voice/stream"));
    let some = format!(
        "{:?}",
        UrlToken::from_target("/voice/stream?token=s3cr3t-t0ken")
    );
    let bad = format!("{:?}", UrlToken::from_target("/voice/stream?token="));
    for d in [&none, &some, &bad] {
        assert!(d.starts_with("UrlToken("), "{d}");
        assert!(!d.contains("s3cr3t"), "{d}");
    }
    let distinct: HashSet<&String> = [&none, &some, &bad].into_iter().collect();
    assert_eq!(distinct.len(), 3, "{none} {some} {bad}");
}
