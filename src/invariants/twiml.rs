//! Target `twiml`: arbitrary `<Stream>` descriptions into `twiml::render`.

use crate::wire::twiml::{self, Field, StreamTwiml, Track, TwimlError, Verb};

use super::fixtures::violated;

/// XML 1.0 §2.2 `Char`, written out here rather than taken from [`twiml::is_xml_char`].
fn xml_allows(c: char) -> bool {
    let u = u32::from(c);
    matches!(u, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x0010_FFFF)
}

/// The errors `render` may justly return for `t` (empty: it must succeed).
fn twiml_problems(t: &StreamTwiml) -> Vec<TwimlError> {
    let mut p = Vec::new();
    // `wss://` or `ws://` (any case), then a host: something that does not start with `/`.
    let url = t.url.as_bytes();
    let after_scheme = [b"wss://".as_slice(), b"ws://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .and_then(|_| url.get(scheme.len()..))
    });
    if after_scheme.is_none_or(|rest| rest.first().is_none_or(|&b| b == b'/')) {
        p.push(TwimlError::UrlScheme);
    }
    if t.url.contains('?') {
        p.push(TwimlError::UrlHasQuery);
    }
    if t.url.contains('#') {
        p.push(TwimlError::UrlHasFragment);
    }
    if t.verb == Verb::Connect && t.track.is_some_and(|tr| tr != Track::Inbound) {
        p.push(TwimlError::TrackNotAllowed);
    }
    let bad = |s: &str| !s.chars().all(xml_allows);
    if bad(&t.url) {
        p.push(TwimlError::ForbiddenCharacter(Field::Url));
    }
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
/// (a URL that is not `ws(s)://` and a host, has a query or fragment; a track other than
/// `inbound_track` under `<Connect>`; an empty or repeated parameter name; a character XML
/// 1.0 forbids), and then with one of that input's problems; a rendered document starts
/// with the XML declaration, holds no raw tab, newline or carriage return, parses with
/// `roxmltree`, has no text node, is `<Response><{Connect|Start}><Stream>` with exactly the
/// attributes given (in ascending name order) and one `<Parameter name value>` per
/// parameter, and every value reads back exactly as given.
pub fn twiml(t: &StreamTwiml) -> bool {
    let rendered = twiml::render(t);
    if rendered != twiml::render(t) {
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
