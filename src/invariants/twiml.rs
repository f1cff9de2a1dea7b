//! Target `twiml`: arbitrary `<Stream>` descriptions into `twiml::render`.

use crate::wire::twiml::{self, Field, StreamTwiml, Track, TwimlError, Verb};

use super::Crate;
use super::fixtures::violated;

/// The code the `twiml` target checks: by default the crate's own renderer. A test implements
/// it with a deliberately wrong one, to show the oracle rejects it
/// (`tests/invariants_fire.rs`).
pub trait TwimlCode {
    /// [`twiml::render`].
    fn render(&self, t: &StreamTwiml) -> Result<String, TwimlError> {
        twiml::render(t)
    }
}

impl TwimlCode for Crate {}

/// XML 1.0 §2.2 `Char`, written out here rather than taken from [`twiml::is_xml_char`].
fn xml_allows(c: char) -> bool {
    let u = u32::from(c);
    matches!(u, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x0010_FFFF)
}

/// The problems of a `<Stream url>`, stated from the standards rather than taken from
/// `twiml::render`: a WebSocket URI is the scheme `ws` or `wss` (case-insensitive, RFC 3986
/// §3.1), then `//` and an authority that names a host (RFC 6455 §3; RFC 3986 §3.2: the
/// authority ends at the first `/`, `?` or `#`, its userinfo at the last `@`, and the host
/// is a bracketed IPv6 literal or what precedes the port's `:`), else [`TwimlError::UrlScheme`];
/// a query (a `?` before any `#`, RFC 3986 §3.4), which Twilio drops (`PROTOCOL.md` §1.3,
/// error 31920), is [`TwimlError::UrlHasQuery`]; a fragment (`#`), which RFC 6455 §3 says
/// "MUST NOT be used", is [`TwimlError::UrlHasFragment`]; a character XML 1.0 forbids is
/// [`TwimlError::ForbiddenCharacter`]. `tests/twiml.rs` holds this statement to a table of
/// hand-written URLs and to the URLs of the twilio-python vectors.
pub fn stream_url_problems(url: &str) -> Vec<TwimlError> {
    let mut p = Vec::new();
    let hier_part = url.split_once(':').and_then(|(scheme, rest)| {
        let websocket = ["ws", "wss"].iter().any(|s| scheme.eq_ignore_ascii_case(s));
        websocket.then(|| rest.strip_prefix("//")).flatten()
    });
    let names_a_host = hier_part.is_some_and(|hier| {
        let authority_end = hier.find(['/', '?', '#']).unwrap_or(hier.len());
        let authority = hier.get(..authority_end).unwrap_or_default();
        let after_userinfo = match authority.rfind('@') {
            Some(at) => authority.get(at.saturating_add(1)..).unwrap_or_default(),
            None => authority,
        };
        let host = match after_userinfo.strip_prefix('[') {
            Some(literal) => literal
                .split(']')
                .next()
                .map_or(0, |inside| inside.len().saturating_add(1)),
            None => after_userinfo.find(':').unwrap_or(after_userinfo.len()),
        };
        host > 0
    });
    if !names_a_host {
        p.push(TwimlError::UrlScheme);
    }
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((before, _)) => (before, true),
        None => (url, false),
    };
    if before_fragment.contains('?') {
        p.push(TwimlError::UrlHasQuery);
    }
    if fragment {
        p.push(TwimlError::UrlHasFragment);
    }
    if !url.chars().all(xml_allows) {
        p.push(TwimlError::ForbiddenCharacter(Field::Url));
    }
    p
}

/// The errors `render` may justly return for `t` (empty: it must succeed).
fn twiml_problems(t: &StreamTwiml) -> Vec<TwimlError> {
    let mut p = stream_url_problems(&t.url);
    if t.verb == Verb::Connect && t.track.is_some_and(|tr| tr != Track::Inbound) {
        p.push(TwimlError::TrackNotAllowed);
    }
    let bad = |s: &str| !s.chars().all(xml_allows);
    if t.name.as_deref().is_some_and(bad) {
        p.push(TwimlError::ForbiddenCharacter(Field::Name));
    }
    if t.status_callback.as_deref().is_some_and(bad) {
        p.push(TwimlError::ForbiddenCharacter(Field::StatusCallback));
    }
    for (i, (name, value)) in t.parameters.iter().enumerate() {
        if name.is_empty() {
            p.push(TwimlError::EmptyParameterName(i));
        }
        if t.parameters.iter().take(i).any(|(n, _)| n == name) {
            p.push(TwimlError::DuplicateParameterName(i));
        }
        if bad(name) {
            p.push(TwimlError::ForbiddenCharacter(Field::ParameterName(i)));
        }
        if bad(value) {
            p.push(TwimlError::ForbiddenCharacter(Field::ParameterValue(i)));
        }
    }
    p
}

fn elements<'a, 'input>(n: roxmltree::Node<'a, 'input>) -> Vec<roxmltree::Node<'a, 'input>> {
    n.children().collect()
}

/// Target `twiml`: [`twiml::render`] of `t`.
///
/// Invariants: rendering is deterministic; it fails exactly when the input has a problem
/// (a URL with one of the [`stream_url_problems`] stated from RFC 6455 and RFC 3986; a track other than
/// `inbound_track` under `<Connect>`; an empty or repeated parameter name; a character XML
/// 1.0 forbids), and then with one of that input's problems; a rendered document starts
/// with the XML declaration, holds no raw tab, newline or carriage return, parses with
/// `roxmltree`, has no text node, is `<Response><{Connect|Start}><Stream>` with exactly the
/// attributes given (in ascending name order) and one `<Parameter name value>` per
/// parameter, and every value reads back exactly as given.
pub fn twiml(t: &StreamTwiml) -> bool {
    twiml_with(&Crate, t)
}

/// [`twiml()`] over `code`.
pub fn twiml_with<C: TwimlCode + ?Sized>(code: &C, t: &StreamTwiml) -> bool {
    let rendered = code.render(t);
    if rendered != code.render(t) {
        violated(format_args!("twiml::render is not deterministic"));
    }
    let problems = twiml_problems(t);
    let xml = match rendered {
        Err(e) => {
            if !problems.contains(&e) {
                violated(format_args!(
                    "render refused with {e:?}, but the input's problems are {problems:?}"
                ));
            }
            return false;
        }
        Ok(xml) => xml,
    };
    if !problems.is_empty() {
        violated(format_args!(
            "render accepted an input with problems {problems:?}: {xml:?}"
        ));
    }
    if !xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#) {
        violated(format_args!(
            "TwiML does not start with the declaration: {xml:?}"
        ));
    }
    if xml.contains(['\n', '\r', '\t']) {
        violated(format_args!("TwiML holds a raw tab or line break: {xml:?}"));
    }
    let doc = match roxmltree::Document::parse(&xml) {
        Ok(d) => d,
        Err(e) => violated(format_args!("rendered TwiML is not XML ({e}): {xml:?}")),
    };
    if let Some(n) = doc.descendants().find(|n| !n.is_element() && !n.is_root()) {
        violated(format_args!(
            "TwiML holds a non-element node {n:?}: {xml:?}"
        ));
    }
    let response = doc.root_element();
    let verb_name = match t.verb {
        Verb::Connect => "Connect",
        Verb::Start => "Start",
    };
    let verb = match elements(response).as_slice() {
        [v] if response.tag_name().name() == "Response"
            && v.tag_name().name() == verb_name
            && response.attributes().next().is_none()
            && v.attributes().next().is_none() =>
        {
            *v
        }
        _ => violated(format_args!(
            "TwiML is not <Response><{verb_name}>: {xml:?}"
        )),
    };
    let stream = match elements(verb).as_slice() {
        [s] if s.tag_name().name() == "Stream" => *s,
        _ => violated(format_args!(
            "<{verb_name}> does not hold one <Stream>: {xml:?}"
        )),
    };
    let mut expected: Vec<(&str, &str)> = Vec::new();
    if let Some(n) = &t.name {
        expected.push(("name", n));
    }
    if let Some(cb) = &t.status_callback {
        expected.push(("statusCallback", cb));
    }
    if let Some(m) = t.status_callback_method {
        expected.push(("statusCallbackMethod", m.as_str()));
    }
    if let Some(tr) = t.track {
        expected.push(("track", tr.as_str()));
    }
    expected.push(("url", &t.url));
    let attrs = |n: roxmltree::Node<'_, '_>| {
        n.attributes()
            .map(|a| (a.name().to_owned(), a.value().to_owned()))
            .collect::<Vec<_>>()
    };
    let same = |got: &[(String, String)], want: &[(&str, &str)]| {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|((gn, gv), (wn, wv))| gn == wn && gv == wv)
    };
    if !same(&attrs(stream), &expected) {
        violated(format_args!(
            "<Stream> attributes {:?} are not {expected:?}",
            attrs(stream)
        ));
    }
    let params = elements(stream);
    if params.len() != t.parameters.len() {
        violated(format_args!(
            "{} <Parameter>s for {} parameters",
            params.len(),
            t.parameters.len()
        ));
    }
    for (p, (name, value)) in params.iter().zip(&t.parameters) {
        let want = [("name", name.as_str()), ("value", value.as_str())];
        if p.tag_name().name() != "Parameter" || !same(&attrs(*p), &want) || p.has_children() {
            violated(format_args!("<Parameter> {:?} is not {want:?}", attrs(*p)));
        }
    }
    true
}
