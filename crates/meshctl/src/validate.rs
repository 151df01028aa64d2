//! `meshctl validate`: reads manifests as the control plane does ([`manifest::parse_file`] per
//! file, then [`validate::references`] across every valid object) and prints every problem, then
//! the status Bowline's controller gives the Gateway API objects
//! ([`bowline_model::gatewayapi::status`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bowline_model::manifest::{self, Object, Parsed, Problem, Source};
use bowline_model::validate;

/// One line of output, placed by the file and document it is about.
struct Line {
    file: usize,
    document: usize,
    text: String,
}

/// What `validate` found: the lines to print and the counts for the summary.
#[derive(Default)]
struct Report {
    quiet: bool,
    lines: Vec<Line>,
    files: usize,
    objects: usize,
    skipped: usize,
    errors: usize,
    ignored: usize,
    /// Gateway API status conditions, one per line.
    status: Vec<String>,
}

/// Validates `inputs` (files, directories, `-`), prints the problems and a summary, and returns
/// the exit status: failure when any document has an error.
pub fn run(inputs: &[PathBuf], quiet: bool) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for input in inputs {
        collect(input, &mut files)?;
    }
    let mut report = Report {
        quiet,
        files: files.len(),
        ..Report::default()
    };
    let mut objects: Vec<(Source, Object)> = Vec::new();
    let mut file_index: HashMap<PathBuf, usize> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        let text = read(file)?;
        let name = if file == Path::new("-") {
            Path::new("<stdin>")
        } else {
            file.as_path()
        };
        file_index.insert(name.to_path_buf(), i);
        for parsed in manifest::parse_file(name, &text) {
            match parsed {
                Parsed::Object {
                    source,
                    object,
                    problems,
                } => {
                    report.objects += 1;
                    report.problems(i, &problems);
                    objects.push((source, *object));
                }
                Parsed::Invalid { problems, .. } => {
                    report.objects += 1;
                    report.problems(i, &problems);
                }
                Parsed::Skipped {
                    source,
                    api_version,
                    kind,
                    name,
                } => report.skipped(
                    i,
                    &source,
                    format!("{source}: skipped: {kind} {name} ({api_version}) is not a kind Bowline reads"),
                ),
            }
        }
    }
    for p in validate::references(&objects) {
        let file = p
            .source
            .as_ref()
            .and_then(|s| file_index.get(&s.file))
            .copied()
            .unwrap_or(0);
        report.problems(file, std::slice::from_ref(&p));
    }
    let analysis = bowline_model::gatewayapi::status::analyse(objects.iter().map(|(_, o)| o));
    for s in &analysis.statuses {
        for (line, bad) in s.lines().into_iter().zip(s.problem_flags()) {
            if !quiet || bad {
                report.status.push(line);
            }
        }
    }

    let mut out = std::io::stdout().lock();
    report.print(&mut out)?;
    out.flush()?;
    Ok(if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// === impl Report ===

impl Report {
    fn problems(&mut self, file: usize, problems: &[Problem]) {
        for p in problems {
            if p.is_error() {
                self.errors += 1;
            } else {
                self.ignored += 1;
                if self.quiet {
                    continue;
                }
            }
            self.lines.push(Line {
                file,
                document: p.source.as_ref().map_or(0, |s| s.document),
                text: p.to_string(),
            });
        }
    }

    fn skipped(&mut self, file: usize, source: &Source, text: String) {
        self.skipped += 1;
        if !self.quiet {
            self.lines.push(Line {
                file,
                document: source.document,
                text,
            });
        }
    }

    /// Every line in file order, then document order (within a document, in the order found),
    /// then the summary.
    fn print(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.lines.sort_by_key(|l| (l.file, l.document));
        for l in &self.lines {
            writeln!(out, "{}", l.text)?;
        }
        if !self.status.is_empty() {
            writeln!(out, "Gateway API status:")?;
            for l in &self.status {
                writeln!(out, "  {l}")?;
            }
        }
        writeln!(out, "{}", self.summary())
    }

    /// `3 files, 12 objects, 4 skipped: 2 errors, 5 ignored fields`
    fn summary(&self) -> String {
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        let mut s = format!(
            "{}, {}",
            n(self.files, "file", "files"),
            n(self.objects, "object", "objects")
        );
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        format!(
            "{s}: {}, {}",
            n(self.errors, "error", "errors"),
            n(self.ignored, "ignored field", "ignored fields")
        )
    }
}

pub(crate) fn read(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

fn is_manifest(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// Expands one `-f` argument: a file as is, a directory into its manifests (recursively, sorted).
pub(crate) fn collect(input: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if input == Path::new("-") {
        out.push(input.to_path_buf());
        return Ok(());
    }
    let meta = std::fs::metadata(input).with_context(|| format!("reading {}", input.display()))?;
    if !meta.is_dir() {
        out.push(input.to_path_buf());
        return Ok(());
    }
    let mut entries = std::fs::read_dir(input)
        .with_context(|| format!("reading directory {}", input.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading directory {}", input.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out)?;
        } else if is_manifest(&path) {
            out.push(path);
        }
    }
    Ok(())
}
