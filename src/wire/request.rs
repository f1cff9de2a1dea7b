//! An HTTP request head as the pure decisions ([`crate::upgrade`], [`crate::webhook`]) see
//! it: owned strings and bytes, no hyper types, so tests and fuzz targets build one directly.

/// The head of an HTTP request, as the pure functions see it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RequestHead {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as received (`/voice/stream?x=1`).
    pub target: String,
    /// Header names and raw values, in order, repeats kept.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The value of header `name` if it appears exactly once.
    pub fn single_header<'a>(&'a self, name: &'a str) -> Result<Option<&'a [u8]>, Repeated> {
        let mut values = self.header_values(name);
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => Ok(Some(v)),
            (Some(_), Some(_)) => Err(Repeated),
        }
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query part of the target (after `?`), if there is a `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// A header that must appear at most once appeared more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeated;
