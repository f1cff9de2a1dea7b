//! Target `upgrade_request_raw`: raw HTTP request heads, parsed by `httparse`, into
//! `upgrade::decide`.

use crate::upgrade::RequestHead;

use super::Crate;
use super::upgrade_request::{PolicyUrl, UpgradeCode, UpgradeOutcome, check_upgrade_with};

#[cfg(doc)]
use crate::upgrade::{self, SignatureMode};

/// Most headers the raw target parses (httparse needs a fixed array).
const RAW_MAX_HEADERS: usize = 32;

/// Target `upgrade_request_raw`: `data` parsed as an HTTP/1.x request head with `httparse`
/// (as hyper does), then into [`upgrade::decide`] under [`PolicyUrl::NoPort`] and each
/// [`SignatureMode`]. Input that is not a complete request head is not a request and is
/// skipped. See [`super::check_upgrade`] for the invariants.
pub fn upgrade_request_raw(data: &[u8]) -> Option<UpgradeOutcome> {
    upgrade_request_raw_with(&Crate, data)
}

/// [`upgrade_request_raw`] over `code`.
pub fn upgrade_request_raw_with<C: UpgradeCode + ?Sized>(
    code: &C,
    data: &[u8],
) -> Option<UpgradeOutcome> {
    let mut headers = [httparse::EMPTY_HEADER; RAW_MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let head = RequestHead {
        method: req.method?.to_owned(),
        target: req.path?.to_owned(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
    };
    Some(check_upgrade_with(code, &head, PolicyUrl::NoPort))
}
