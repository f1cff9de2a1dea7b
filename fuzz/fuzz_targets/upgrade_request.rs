//! Structured request heads into `upgrade::decide`: `invariants::upgrade_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, UpgradeInput};

fuzz_target!(|input: UpgradeInput| {
    invariants::upgrade_request(&input);
});
