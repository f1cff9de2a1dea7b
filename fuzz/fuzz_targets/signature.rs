//! Arbitrary URLs, parameters, bodies and headers into `signature::validate`:
//! `invariants::signature`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, SignatureInput};

// The bytes are a JSON seed or read with `arbitrary`: `invariants::decode_input`.
fuzz_target!(|data: &[u8]| {
    if let Some(input) = invariants::decode_input::<SignatureInput>(data) {
        invariants::signature(&input);
    }
});
