//! `cargo xtask conformance [--check] [--no-run]`: runs the data-driven conformance tables
//! (`cargo test -p bowline-tests --test gateway_api --test ingress_annotations --test ingress`),
//! reads the one-JSON-line-per-case results they record under `<target dir>/conformance/`, and
//! writes `docs/conformance.md`: per suite, every feature of [`FEATURES`] with its level, its
//! status (measured from its cases, or declared when no case covers it), cases passed/total and
//! notes. `--check` writes nothing and fails when the file differs from what the results render
//! (the date line aside).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Where the report goes, relative to the workspace root.
pub const OUTPUT: &str = "docs/conformance.md";
/// The line that starts with this names the date and commit; `--check` ignores it.
const GENERATED: &str = "Generated on ";

/// The suites, in the report's order: (suite id in the results, title, what its cases come from).
const SUITES: &[(&str, &str, &str)] = &[
    (
        "gateway-api",
        "Gateway API (HTTPRoute, GRPCRoute)",
        "the upstream conformance manifests and the requests its tests send \
         (`tests/tests/gateway_api.rs`); feature names are the conformance suite's",
    ),
    (
        "ingress",
        "Ingress (`networking.k8s.io/v1`)",
        "the Ingress specification and the Kubernetes documentation's examples \
         (`tests/tests/ingress.rs`)",
    ),
    (
        "ingress-nginx",
        "ingress-nginx annotations",
        "the ingress-nginx documentation of each annotation (`tests/tests/ingress_annotations.rs`); \
         names without the `nginx.ingress.kubernetes.io/` prefix",
    ),
];

/// What the declared list says of a feature, besides its cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// Implemented; the status comes from its cases alone.
    Measured,
    /// Implemented in part: never reported better than partial.
    Partial(&'static str),
    /// Not implemented.
    NotSupported(&'static str),
}

/// One feature the report covers.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    pub suite: &'static str,
    pub name: &'static str,
    /// `core`, `extended` (Gateway API support levels) or `annotation`.
    pub level: &'static str,
    pub declared: Declared,
}

const fn f(suite: &'static str, name: &'static str, level: &'static str) -> Feature {
    Feature {
        suite,
        name,
        level,
        declared: Declared::Measured,
    }
}

const fn partial(mut feature: Feature, note: &'static str) -> Feature {
    feature.declared = Declared::Partial(note);
    feature
}

const fn not(mut feature: Feature, reason: &'static str) -> Feature {
    feature.declared = Declared::NotSupported(reason);
    feature
}

const GW: &str = "gateway-api";
const ING: &str = "ingress";
const NGX: &str = "ingress-nginx";

/// Every feature of the report, with the reasons of docs/gateway-api.md and docs/ingress.md for
/// what is partial or missing.
pub const FEATURES: &[Feature] = &[
    f(GW, "Gateway", "core"),
    f(GW, "HTTPRoute", "core"),
    f(GW, "ReferenceGrant", "core"),
    f(GW, "GRPCRoute", "core"),
    f(GW, "GatewayHTTPListenerIsolation", "extended"),
    f(GW, "HTTPRouteQueryParamMatching", "extended"),
    f(GW, "HTTPRouteMethodMatching", "extended"),
    f(GW, "HTTPRouteResponseHeaderModification", "extended"),
    f(GW, "HTTPRouteHostRewrite", "extended"),
    f(GW, "HTTPRoutePathRewrite", "extended"),
    f(GW, "HTTPRoutePathRedirect", "extended"),
    f(GW, "HTTPRoutePortRedirect", "extended"),
    f(GW, "HTTPRouteSchemeRedirect", "extended"),
    f(GW, "HTTPRoute303RedirectStatusCode", "extended"),
    f(GW, "HTTPRoute307RedirectStatusCode", "extended"),
    f(GW, "HTTPRoute308RedirectStatusCode", "extended"),
    f(GW, "HTTPRouteParentRefPort", "extended"),
    f(GW, "HTTPRouteNamedRouteRule", "extended"),
    f(GW, "HTTPRouteRequestMirror", "extended"),
    f(GW, "HTTPRouteRequestMultipleMirrors", "extended"),
    f(GW, "HTTPRouteRequestPercentageMirror", "extended"),
    f(GW, "HTTPRouteRequestTimeout", "extended"),
    f(GW, "HTTPRouteBackendTimeout", "extended"),
    f(GW, "HTTPRouteBackendProtocolH2C", "extended"),
    partial(
        f(GW, "HTTPRouteBackendRequestRedirect", "extended"),
        "applies when the rule has a single backendRef; not on one backendRef among several",
    ),
    partial(
        f(GW, "HTTPRouteBackendURLRewrite", "extended"),
        "applies when the rule has a single backendRef; not on one backendRef among several",
    ),
    f(GW, "HTTPRouteBackendRequestHeaderModification", "extended"),
    f(GW, "HTTPRouteCORS", "extended"),
    f(
        GW,
        "GatewayHTTPSListenerDetectMisdirectedRequests",
        "extended",
    ),
    f(GW, "GRPCRouteNamedRouteRule", "extended"),
    f(GW, "GRPCRouteRequestHeaderModifier", "extended"),
    not(
        f(GW, "TLSRoute", "extended"),
        "TLS Passthrough and TLS/TCP/UDP listeners are not supported",
    ),
    not(
        f(GW, "GatewayStaticAddresses", "extended"),
        "`spec.addresses` is accepted and reported as ignored",
    ),
    not(
        f(GW, "GatewayInfrastructurePropagation", "extended"),
        "`spec.infrastructure` is accepted and reported as ignored",
    ),
    f(ING, "rules", "core"),
    f(ING, "pathType", "core"),
    f(ING, "defaultBackend", "core"),
    f(ING, "host wildcards", "core"),
    not(
        f(ING, "backend.resource", "core"),
        "`backend.resource` backends are not implemented",
    ),
    not(
        f(ING, "status", "core"),
        "load balancer addresses and events come with Kubernetes mode",
    ),
    f(NGX, "rewrite-target", "annotation"),
    f(NGX, "bowline.io/rewrite-target", "annotation"),
    f(NGX, "use-regex", "annotation"),
    f(NGX, "app-root", "annotation"),
    f(NGX, "ssl-redirect", "annotation"),
    f(NGX, "force-ssl-redirect", "annotation"),
    f(NGX, "permanent-redirect", "annotation"),
    f(NGX, "permanent-redirect-code", "annotation"),
    f(NGX, "temporal-redirect", "annotation"),
    partial(
        f(NGX, "backend-protocol", "annotation"),
        "`HTTP`, `HTTPS`, `GRPC`, `GRPCS`; `AJP`, `FCGI` not supported",
    ),
    f(NGX, "proxy-ssl-verify", "annotation"),
    f(NGX, "proxy-ssl-name", "annotation"),
    f(NGX, "canary", "annotation"),
    f(NGX, "canary-by-header", "annotation"),
    f(NGX, "canary-by-header-value", "annotation"),
    f(NGX, "canary-by-header-pattern", "annotation"),
    f(NGX, "canary-by-cookie", "annotation"),
    f(NGX, "canary-weight", "annotation"),
    f(NGX, "canary-weight-total", "annotation"),
    f(NGX, "affinity", "annotation"),
    f(NGX, "session-cookie-name", "annotation"),
    f(NGX, "session-cookie-max-age", "annotation"),
    f(NGX, "session-cookie-expires", "annotation"),
    f(NGX, "session-cookie-path", "annotation"),
    f(NGX, "session-cookie-domain", "annotation"),
    f(NGX, "session-cookie-secure", "annotation"),
    f(NGX, "session-cookie-samesite", "annotation"),
    f(NGX, "upstream-hash-by", "annotation"),
    f(NGX, "load-balance", "annotation"),
    f(NGX, "proxy-connect-timeout", "annotation"),
    f(NGX, "proxy-read-timeout", "annotation"),
    f(NGX, "proxy-send-timeout", "annotation"),
    f(NGX, "enable-cors", "annotation"),
    f(NGX, "whitelist-source-range", "annotation"),
    f(NGX, "denylist-source-range", "annotation"),
    f(NGX, "limit-rps", "annotation"),
    f(NGX, "limit-rpm", "annotation"),
    f(NGX, "limit-connections", "annotation"),
    f(NGX, "limit-whitelist", "annotation"),
    f(NGX, "proxy-body-size", "annotation"),
    not(
        f(NGX, "configuration-snippet", "annotation"),
        "raw nginx configuration is refused (also `server-snippet`, `stream-snippet`, `auth-snippet`, `modsecurity-snippet`)",
    ),
    not(
        f(NGX, "auth-url", "annotation"),
        "reported as not supported by Bowline",
    ),
    not(
        f(NGX, "custom-http-errors", "annotation"),
        "reported as not supported by Bowline",
    ),
];

/// One recorded case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub suite: String,
    pub feature: String,
    pub case: String,
    pub passed: bool,
}

/// Parses one suite's JSONL results; `source` names the file in errors.
pub fn parse(source: &str, text: &str) -> anyhow::Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{source}:{}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let field = |name: &str| {
            v[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{}: field `{name}` is missing or not a string", at()))
        };
        let passed = match field("outcome")?.as_str() {
            "pass" => true,
            "fail" => false,
            other => bail!(
                "{}: outcome {other:?} is neither \"pass\" nor \"fail\"",
                at()
            ),
        };
        out.push(Outcome {
            suite: field("suite")?,
            feature: field("feature")?,
            case: field("case")?,
            passed,
        });
    }
    Ok(out)
}

/// The report's markdown for `results`; `generated` is the date-and-commit line's text.
pub fn render(results: &[Outcome], generated: &str) -> anyhow::Result<String> {
    // Every recorded feature must be declared, so a renamed label cannot vanish from the report.
    for r in results {
        if !FEATURES
            .iter()
            .any(|f| f.suite == r.suite && f.name == r.feature)
        {
            bail!(
                "suite {:?}: feature {:?} (case {:?}) is not in xtask's FEATURES list",
                r.suite,
                r.feature,
                r.case
            );
        }
    }
    let mut md = String::from(
        "# Conformance\n\n\
         <!-- Generated by `cargo xtask conformance`; do not edit. -->\n\n\
         What Bowline supports of the Gateway API, of Ingress and of the ingress-nginx annotations, \
         **measured**: each row is a feature, and its cases are requests sent through the real \
         control plane and gateway binaries (started on loopback by the black-box tests) with the \
         backend, status, path, host and headers the specification or documentation expects. \
         Each case records its outcome before it is asserted.\n\n\
         Status: **supported** when all its cases passed; **partial** when only some passed, or \
         when the feature is implemented in part (the note says what is missing; \
         **partial, not measured** when no table case checks it yet); **not \
         supported** when none passed or it is not implemented; **not measured** when it is \
         implemented (see [gateway-api.md](gateway-api.md), [ingress.md](ingress.md)) but no \
         table case checks it yet.\n\n\
         ## Regenerating\n\n\
         ```sh\n\
         cargo xtask conformance            # run the tests, write docs/conformance.md\n\
         cargo xtask conformance --check    # run the tests, fail if this file is stale\n\
         cargo xtask conformance --no-run   # render the last results only\n\
         ```\n\n\
         It runs `cargo test -p bowline-tests --test gateway_api --test ingress_annotations \
         --test ingress` (a failing test fails the task after the report is rendered), reads the \
         results the tests append to `<target dir>/conformance/<suite>.jsonl` (one JSON line \
         per case; each test binary truncates its suite's file when it starts recording), and \
         renders them with the declared feature list of `xtask/src/conformance.rs`. `--check` \
         ignores the date line below.\n\n",
    );
    md += &format!("{GENERATED}{generated}.\n");
    for (suite, title, from) in SUITES {
        md += &format!("\n## {title}\n\nCases from {from}.\n\n");
        md += "| feature | level | status | cases passed/total | notes |\n|---|---|---|---|---|\n";
        for feature in FEATURES.iter().filter(|f| f.suite == *suite) {
            let cases: Vec<&Outcome> = results
                .iter()
                .filter(|r| r.suite == *suite && r.feature == feature.name)
                .collect();
            let passed = cases.iter().filter(|c| c.passed).count();
            let (status, mut notes) = status(feature.declared, passed, cases.len());
            let failed: Vec<&str> = cases
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.case.as_str())
                .collect();
            if !failed.is_empty() {
                notes.push(format!("failed: {}", failed.join("; ")));
            }
            let counts = if cases.is_empty() {
                "0/0".to_string()
            } else {
                format!("{passed}/{}", cases.len())
            };
            md += &format!(
                "| `{}` | {} | {status} | {counts} | {} |\n",
                feature.name,
                feature.level,
                notes.join("; ").replace('|', "\\|")
            );
        }
    }
    Ok(md)
}

/// A feature's status and notes from its declaration and its cases.
fn status(declared: Declared, passed: usize, total: usize) -> (&'static str, Vec<String>) {
    let measured = if total == 0 {
        None
    } else if passed == total {
        Some("supported")
    } else if passed > 0 {
        Some("partial")
    } else {
        Some("not supported")
    };
    match (declared, measured) {
        (Declared::NotSupported(why), _) => ("not supported", vec![why.to_string()]),
        (Declared::Partial(why), Some("not supported")) => ("not supported", vec![why.to_string()]),
        (Declared::Partial(why), None) => ("partial, not measured", vec![why.to_string()]),
        (Declared::Partial(why), _) => ("partial", vec![why.to_string()]),
        (Declared::Measured, Some(s)) => (s, Vec::new()),
        (Declared::Measured, None) => ("not measured", vec!["no table case yet".to_string()]),
    }
}

/// The same text without the date-and-commit line.
fn without_date(md: &str) -> String {
    md.lines()
        .filter(|l| !l.starts_with(GENERATED))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, clap::Args)]
pub struct Conformance {
    /// Write nothing; fail when docs/conformance.md differs from what the results render.
    #[arg(long)]
    check: bool,
    /// Do not run the tests; render the results of the last run.
    #[arg(long)]
    no_run: bool,
}

impl Conformance {
    pub fn run(self, root: &Path) -> anyhow::Result<()> {
        let tests_ok = if self.no_run {
            true
        } else {
            let status = Command::new(env!("CARGO"))
                .current_dir(root)
                .args([
                    "test",
                    "-p",
                    "bowline-tests",
                    "--test",
                    "gateway_api",
                    "--test",
                    "ingress_annotations",
                    "--test",
                    "ingress",
                ])
                .status()
                .context("running cargo test")?;
            status.success()
        };
        let dir = results_dir(root);
        let mut results = Vec::new();
        for (suite, _, _) in SUITES {
            let path = dir.join(format!("{suite}.jsonl"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (run the tests first)", path.display()))?;
            results.extend(parse(&path.display().to_string(), &text)?);
        }
        let generated = format!("{} from commit {}", today(root)?, commit(root)?);
        let wanted = render(&results, &generated)?;
        let path = root.join(OUTPUT);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if self.check {
            if without_date(&current) != without_date(&wanted) {
                bail!("{OUTPUT} differs from the results; run `cargo xtask conformance`");
            }
            println!("{OUTPUT} is up to date");
        } else {
            std::fs::write(&path, &wanted)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {OUTPUT}");
        }
        if !tests_ok {
            bail!("some conformance tests failed (see above); the report shows their cases");
        }
        Ok(())
    }
}

/// `<target dir>/conformance`, as the tests' `conformance::dir` computes it.
fn results_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("conformance")
}

fn output(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .current_dir(root)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn today(root: &Path) -> anyhow::Result<String> {
    output(root, "date", &["-u", "+%Y-%m-%d"])
}

fn commit(root: &Path) -> anyhow::Result<String> {
    output(root, "git", &["rev-parse", "--short", "HEAD"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(suite: &str, feature: &str, case: &str, passed: bool) -> Outcome {
        Outcome {
            suite: suite.into(),
            feature: feature.into(),
            case: case.into(),
            passed,
        }
    }

    fn row<'a>(md: &'a str, feature: &str) -> &'a str {
        md.lines()
            .find(|l| l.starts_with(&format!("| `{feature}` |")))
            .unwrap_or_else(|| panic!("no row for {feature}"))
    }

    #[test]
    fn parses_lines_and_names_the_bad_one() {
        let text = "{\"suite\":\"ingress\",\"feature\":\"rules\",\"case\":\"a/\",\"outcome\":\"pass\"}\n\n{\"suite\":\"ingress\",\"feature\":\"rules\",\"case\":\"b/\",\"outcome\":\"fail\"}\n";
        let got = parse("x.jsonl", text).unwrap();
        assert_eq!(
            got,
            vec![
                outcome("ingress", "rules", "a/", true),
                outcome("ingress", "rules", "b/", false)
            ]
        );
        let err = parse(
            "x.jsonl",
            "{\"suite\":\"ingress\",\"feature\":\"rules\",\"case\":\"a\",\"outcome\":\"maybe\"}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("x.jsonl:1"), "{err}");
        let err = parse("x.jsonl", "{}\n{\"suite\":1}").unwrap_err();
        assert!(format!("{err:#}").contains("`outcome`"), "{err:#}");
    }

    #[test]
    fn statuses_follow_the_cases_and_the_declarations() {
        let results = [
            outcome(GW, "HTTPRouteMethodMatching", "a", true),
            outcome(GW, "HTTPRouteMethodMatching", "b", true),
            outcome(GW, "HTTPRouteQueryParamMatching", "a", true),
            outcome(GW, "HTTPRouteQueryParamMatching", "b", false),
            outcome(GW, "GRPCRoute", "a", false),
            outcome(GW, "HTTPRoute", "a", true),
        ];
        let md = render(&results, "2026-01-01 from commit abc").unwrap();
        assert!(
            row(&md, "HTTPRouteMethodMatching").contains("| supported | 2/2 |"),
            "{md}"
        );
        let q = row(&md, "HTTPRouteQueryParamMatching");
        assert!(q.contains("| partial | 1/2 | failed: b |"), "{q}");
        assert!(row(&md, "GRPCRoute").contains("| not supported | 0/1 |"));
        let h = row(&md, "HTTPRoute");
        assert!(h.contains("| supported | 1/1 |"), "{h}");
        let b = row(&md, "HTTPRouteBackendURLRewrite");
        assert!(
            b.contains("| partial, not measured | 0/0 | applies when"),
            "{b}"
        );
        assert!(row(&md, "TLSRoute").contains("| not supported | 0/0 | TLS Passthrough"));
        assert!(row(&md, "HTTPRouteRequestTimeout").contains("| not measured | 0/0 |"));
        assert!(md.contains("Generated on 2026-01-01 from commit abc.\n"));
    }

    #[test]
    fn an_undeclared_feature_is_an_error() {
        let err = render(&[outcome(NGX, "made-up", "x", true)], "d").unwrap_err();
        assert!(err.to_string().contains("\"made-up\""), "{err}");
    }

    #[test]
    fn the_check_ignores_only_the_date_line() {
        let a = render(&[], "2026-01-01 from commit abc").unwrap();
        let b = render(&[], "2026-02-02 from commit def").unwrap();
        assert_eq!(without_date(&a), without_date(&b));
        let c = render(
            &[outcome(ING, "rules", "x", true)],
            "2026-01-01 from commit abc",
        )
        .unwrap();
        assert_ne!(without_date(&a), without_date(&c));
    }

    #[test]
    fn every_feature_is_declared_once() {
        let mut seen = std::collections::BTreeSet::new();
        for f in FEATURES {
            assert!(
                SUITES.iter().any(|(s, _, _)| *s == f.suite),
                "{}: unknown suite {}",
                f.name,
                f.suite
            );
            assert!(seen.insert((f.suite, f.name)), "{} twice", f.name);
        }
    }
}
