//! The sidecar binary's command line, run as a user runs it: usage errors exit 64 (EX_USAGE)
//! with a message that names the flag. (Its presence also makes `cargo test` build the binary,
//! which the end-to-end tests in `tests/` start: cargo builds a package's binaries for a test run
//! only when that package has integration tests.)

use std::process::Command;

fn sidecar(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bowline-sidecar"))
        .args(args)
        .env_remove("BOWLINE_VIRTUAL_NODE")
        .env_remove("BOWLINE_APP_PORTS")
        .output()
        .expect("run bowline-sidecar");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_virtual_node_is_required() {
    let (code, text) = sidecar(&[]);
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("--virtual-node"), "names the flag: {text}");
}

#[test]
fn a_virtual_node_without_namespace_is_a_usage_error() {
    let (code, text) = sidecar(&["--virtual-node", "blue"]);
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("invalid --virtual-node"), "{text}");
}

#[test]
fn a_listener_port_mapped_twice_is_a_usage_error() {
    let (code, text) = sidecar(&["--virtual-node", "shop/blue", "--app-port", "8080=1,8080=2"]);
    assert_eq!(code, 64, "{text}");
    assert!(
        text.contains("--app-port maps listener port 8080 twice"),
        "{text}"
    );
}

#[test]
fn help_lists_every_flag() {
    let (code, text) = sidecar(&["--help"]);
    assert_eq!(code, 0, "{text}");
    for flag in [
        "--virtual-node",
        "--outbound-port",
        "--inbound-address",
        "--app-address",
        "--app-port",
        "--admin-addr",
        "--control-plane",
        "--log-level",
        "--drain-timeout",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
}
