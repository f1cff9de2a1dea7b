//! Structured request heads into `upgrade::decide`: `invariants::upgrade_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, UpgradeInput};

// The bytes are a JSON seed or read with `arbitrary`: `invariants::decode_input`.
fuzz_target!(|data: &[u8]| {
    if let Some(input) = invariants::decode_input::<UpgradeInput>(data) {
        invariants::upgrade_request(&input);
    }
});
