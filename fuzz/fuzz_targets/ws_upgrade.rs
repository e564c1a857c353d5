#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sipwarden_core::fuzzing::ws_upgrade_bytes(data));
