//! Arbitrary text into `token::verify`, and issue → mutate → verify: `invariants::token`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamguard::invariants::{self, TokenInput};

fuzz_target!(|input: TokenInput| {
    invariants::token(&input);
});
