//! The protocol document names every error code and close code the code has.

use banter_proto::{close, ErrorCode};

fn protocol_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md exists")
}

#[test]
fn every_error_code_is_documented() {
    let doc = protocol_doc();
    for code in ErrorCode::ALL {
        assert!(doc.contains(&format!("`{}`", code.as_str())), "docs/protocol.md does not mention `{code}`");
    }
}

#[test]
fn every_close_code_is_documented() {
    let doc = protocol_doc();
    for code in [
        close::NORMAL,
        close::GOING_AWAY,
        close::POLICY,
        close::TOO_BIG,
        close::UNAUTHORIZED,
        close::REPLACED,
        close::HEARTBEAT_TIMEOUT,
        close::SLOW_CONSUMER,
    ] {
        assert!(doc.contains(&code.to_string()), "docs/protocol.md does not mention close code {code}");
    }
}
