//! What the benchmarks need from the machine: tools (installed from Debian's packages when
//! missing), CPU pinning, per-process CPU time and peak memory from `/proc`, and a description of
//! the machine for the report.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A program the benchmarks run and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const NGINX: Tool = Tool {
    program: "nginx",
    package: "nginx",
};
pub const WRK: Tool = Tool {
    program: "wrk",
    package: "wrk",
};
pub const H2LOAD: Tool = Tool {
    program: "h2load",
    package: "nghttp2-client",
};
pub const PERF: Tool = Tool {
    program: "perf",
    package: "linux-perf",
};
pub const TASKSET: Tool = Tool {
    program: "taskset",
    package: "util-linux",
};

/// `<target dir>/<profile>`, honouring `CARGO_TARGET_DIR`.
pub fn target_dir(root: &Path, profile: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(profile)
}

/// The full path of a program: `PATH`, then the sbin directories (nginx lives in `/usr/sbin`,
/// which is not on every user's `PATH`).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Makes sure every tool is installed: as root, installs the missing ones with
/// `apt-get install -y` (saying so); otherwise fails with the command to run.
pub fn require_tools(tools: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find_program(t.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let programs: Vec<&str> = missing.iter().map(|t| t.program).collect();
    if !is_root()? {
        bail!(
            "missing {}; install them with `sudo apt-get install -y {}` (or run this as root, \
             which installs them)",
            programs.join(", "),
            packages.join(" ")
        );
    }
    println!(
        "installing {} (for {}) with apt-get",
        packages.join(" "),
        programs.join(", ")
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install().context("running apt-get")?.success() {
        // A fresh machine may have no package lists yet.
        println!("apt-get install failed; running apt-get update and retrying");
        let updated = Command::new("apt-get")
            .arg("update")
            .status()
            .context("running apt-get update")?;
        if !updated.success() || !install().context("running apt-get")?.success() {
            bail!("apt-get install -y {} failed", packages.join(" "));
        }
    }
    for t in &missing {
        if find_program(t.program).is_none() {
            bail!(
                "{} is still missing after installing {}",
                t.program,
                t.package
            );
        }
    }
    Ok(())
}

/// Whether this process runs as root (effective uid 0), from `/proc/self/status`.
fn is_root() -> anyhow::Result<bool> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    Ok(uid == "0")
}

/// A command for `program`, pinned to `cpu` with taskset when one is given. taskset execs the
/// program, so the child's pid is the program's.
pub fn pinned(program: impl AsRef<OsStr>, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The fields of `/proc/<pid>/stat` after the command name, which may contain spaces:
/// index 0 is the state (field 3 of proc(5)).
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))
}

fn parse_stat(stat: &str) -> Option<Vec<String>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU time of a process (all its threads), in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    pub fn total(self) -> u64 {
        self.user + self.system
    }

    /// The time spent since `earlier`.
    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl std::ops::Add for CpuTicks {
    type Output = CpuTicks;

    fn add(self, o: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user + o.user,
            system: self.system + o.system,
        }
    }
}

impl std::iter::Sum for CpuTicks {
    fn sum<I: Iterator<Item = CpuTicks>>(iter: I) -> CpuTicks {
        iter.fold(CpuTicks::default(), |a, b| a + b)
    }
}

/// utime and stime of a process (all its threads).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<CpuTicks> {
    let f = stat_fields(pid)?;
    // utime and stime are fields 14 and 15.
    let field = |i: usize| -> anyhow::Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {} in /proc/{pid}/stat", i + 3))
    };
    Ok(CpuTicks {
        user: field(11)?,
        system: field(12)?,
    })
}

/// The children of a process (nginx's workers), by scanning `/proc`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            // The parent pid is field 4.
            stat_fields(pid)
                .ok()
                .and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(parent)
        })
        .collect()
}

/// Peak resident set size (`VmHWM`) of a process, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_kib(&status, "VmHWM:").with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

fn parse_kib(status: &str, key: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// CPU model, kernel and tool versions, one `name: value` per line.
pub fn machine(tools: &[(&str, &[&str])]) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let mut cpu = field("model name").unwrap_or_else(|| "unknown".into());
    if let (Some(family), Some(model)) = (field("cpu family"), field("model")) {
        cpu.push_str(&format!(" (family {family}, model {model})"));
    }
    if field("flags").is_some_and(|f| f.split_whitespace().any(|f| f == "hypervisor")) {
        cpu.push_str(", virtual machine");
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut out = vec![
        ("cpu".to_string(), format!("{} CPUs, {cpu}", cpu_count())),
        ("kernel".to_string(), kernel),
    ];
    for (program, args) in tools {
        out.push((program.to_string(), version(program, args)));
    }
    out
}

/// The first line a program prints about its version (some print it on stderr, some exit 1).
fn version(program: &str, args: &[&str]) -> String {
    let Some(path) = find_program(program) else {
        return "not installed".into();
    };
    Command::new(path)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_spaces_in_the_name() {
        let stat = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3";
        let f = parse_stat(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "1", "parent pid");
        assert_eq!((f[11].as_str(), f[12].as_str()), ("250", "75"));
    }

    #[test]
    fn vm_hwm_in_bytes() {
        let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t 9000 kB\n";
        assert_eq!(parse_kib(status, "VmHWM:"), Some(9876 * 1024));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        assert!(peak_rss(me).unwrap() > 0);
        // Burn a little CPU so the tick counter cannot legitimately be zero.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_ticks(me).unwrap().total() > 0);
    }
}
