//! Sequences of events on two connections into `Session::handle`: `invariants::session`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, SessionInput};

// The bytes are a JSON seed or read with `arbitrary`: `invariants::decode_input`.
fuzz_target!(|data: &[u8]| {
    if let Some(input) = invariants::decode_input::<SessionInput>(data) {
        invariants::session(&input);
    }
});
