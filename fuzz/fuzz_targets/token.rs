//! Arbitrary text into `token::verify`, and issue → mutate → verify: `invariants::token`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, TokenInput};

// The bytes are a JSON seed or read with `arbitrary`: `invariants::decode_input`.
fuzz_target!(|data: &[u8]| {
    if let Some(input) = invariants::decode_input::<TokenInput>(data) {
        invariants::token(&input);
    }
});
