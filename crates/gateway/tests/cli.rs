//! The gateway binary's command line: usage errors exit 64 (EX_USAGE) with a message that names
//! the flag. (Its presence also makes `cargo test` build the binary for the end-to-end tests.)

use std::process::Command;

fn gateway(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bowline-gateway"))
        .args(args)
        .output()
        .expect("run bowline-gateway");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_gateway_without_namespace_is_a_usage_error() {
    let (code, text) = gateway(&["--gateway", "ingress"]);
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("--gateway"), "names the flag: {text}");
}

#[test]
fn a_bad_control_plane_url_is_a_usage_error() {
    let (code, text) = gateway(&["--gateway", "ns/gw", "--control-plane", "not a url"]);
    assert_eq!(code, 64, "{text}");
    assert!(text.contains("--control-plane"), "names the flag: {text}");
}

#[test]
fn help_lists_every_flag() {
    let (code, text) = gateway(&["--help"]);
    assert_eq!(code, 0, "{text}");
    for flag in [
        "--control-plane",
        "--gateway",
        "--bind",
        "--admin-addr",
        "--log-level",
        "--log-format",
        "--drain-timeout",
        "--worker-threads",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
}

#[test]
fn nothing_to_serve_is_a_usage_error_naming_both_flags() {
    let (code, text) = gateway(&[]);
    assert_eq!(code, 64, "{text}");
    assert!(
        text.contains("--gateway") && text.contains("--ingress-class"),
        "names both flags: {text}"
    );
    let (code, text) = gateway(&["--help"]);
    assert_eq!(code, 0, "{text}");
    for flag in [
        "--ingress-class",
        "--ingress-http-port",
        "--ingress-https-port",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
}
