//! Arbitrary `<Stream>` descriptions into `twiml::render`: `invariants::twiml`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants;
use streamguard::wire::twiml::StreamTwiml;

// The bytes are a JSON seed or read with `arbitrary`: `invariants::decode_input`.
fuzz_target!(|data: &[u8]| {
    if let Some(input) = invariants::decode_input::<StreamTwiml>(data) {
        invariants::twiml(&input);
    }
});
