//! `application/x-www-form-urlencoded` (WHATWG URL Standard §5, "application/x-www-form-urlencoded"):
//! the voice webhook's body, the upgrade's query string, and the simulator's requests.
//! Parsing and writing only; no decisions.

use crate::limits::MAX_WEBHOOK_PARAMS;

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(b.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte). `None`
/// for a malformed escape or bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_val(bytes.next()?)?;
                let lo = hex_val(bytes.next()?)?;
                out.push((hi << 4) | lo);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `application/x-www-form-urlencoded` text into raw (still encoded) name/value pairs.
/// Empty segments (`a=1&&b=2`) are skipped; a segment without `=` has an empty value.
pub fn pairs(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| seg.split_once('=').unwrap_or((seg, "")))
}

/// Decodes a form body into (name, value) pairs; `None` if it is not UTF-8, has a malformed
/// escape, or holds more than [`MAX_WEBHOOK_PARAMS`] pairs.
pub fn parse(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = Vec::new();
    for (n, v) in pairs(text) {
        if out.len() >= MAX_WEBHOOK_PARAMS {
            return None;
        }
        out.push((decode(n)?, decode(v)?));
    }
    Some(out)
}

/// Encodes `s` as `application/x-www-form-urlencoded` text: unreserved bytes as they are,
/// a space as `+`, everything else as `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
