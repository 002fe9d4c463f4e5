//! Memory while a signed release streams in: `pinpost run` with
//! `[update] release_key` fetches a 2 MiB and then a 20 MiB package that
//! `pinpost release publish` left on a local Mosquitto, and its resident
//! memory is sampled from /proc until the package is checked. The two
//! peaks side by side say whether memory follows the package's size (it
//! should not: one 32 KiB chunk is held at a time).
//!
//! `cargo bench --bench update_memory`. Figures, not pass/fail (see
//! BENCHMARKS.md).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "shared/process.rs"]
mod process;

use process::memory;

const PINPOST: &str = env!("CARGO_BIN_EXE_pinpost");

fn fail(why: &str) -> ! {
    eprintln!("update_memory: {why}");
    std::process::exit(1)
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("cannot find a free loopback port: {e}")))
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {what}: {e}")));
    if !out.status.success() {
        fail(&format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
}

fn architecture() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// An uncompressed .deb of `version` holding `bytes` of noise.
fn package(dir: &Path, version: &str, bytes: usize) -> std::path::PathBuf {
    let root = dir.join(format!("root-{version}"));
    let data = root.join("usr/share/pinpost");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap_or_else(|e| fail(&e.to_string()));
    std::fs::create_dir_all(&data).unwrap_or_else(|e| fail(&e.to_string()));
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: pinpost\nVersion: {version}\nArchitecture: {}\nMaintainer: b <b@b>\n\
             Description: bench\n",
            architecture()
        ),
    )
    .unwrap_or_else(|e| fail(&e.to_string()));
    let mut noise = vec![0u8; bytes];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(data.join("noise"), noise).unwrap_or_else(|e| fail(&e.to_string()));
    let deb = dir.join(format!("pinpost_{version}.deb"));
    run(
        "dpkg-deb (apt-get install dpkg)",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Znone", "-b"])
            .arg(&root)
            .arg(&deb),
    );
    deb
}

struct Figure {
    mib: usize,
    idle: u64,
    peak: u64,
    took: Duration,
}

fn fetch(port: u16, mib: usize) -> Figure {
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let d = dir.path();
    let certs = d.join("certs");
    run(
        "pinpost certs release-key",
        Command::new(PINPOST)
            .args(["certs", "--dir"])
            .arg(&certs)
            .arg("release-key"),
    );
    let deb = package(d, &format!("{mib}.0"), mib * 1024 * 1024);
    run(
        "pinpost release sign",
        Command::new(PINPOST)
            .args(["release", "sign"])
            .arg(&deb)
            .arg("--key")
            .arg(certs.join("private/release.key")),
    );
    let spool = d.join("spool");
    let config = d.join("pinpost.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"bench\"\n[broker]\nhost = \"127.0.0.1\"\nport = {port}\n\
             [clock]\ntrust = \"system\"\n[board]\nkind = \"sim\"\n[outbox]\npath = \"{}\"\n[update]\nrelease_key = \"{}\"\n",
            spool.display(),
            certs.join("release.pub").display()
        ),
    )
    .unwrap_or_else(|e| fail(&format!("write config: {e}")));
    let mut agent: Child = Command::new(PINPOST)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {PINPOST}: {e}")));
    let pid = agent.id();
    std::thread::sleep(Duration::from_secs(2));
    let (idle, _) = memory(pid);
    let mut manifest = deb.clone().into_os_string();
    manifest.push(".manifest");
    run(
        "pinpost release publish",
        Command::new(PINPOST)
            .args(["release", "publish"])
            .arg(&manifest)
            .args(["--devices", "bench", "--dir"])
            .arg(&certs)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()]),
    );
    let started = Instant::now();
    let ready = spool.join(format!(
        "update/ready/pinpost_{mib}.0_{}.deb",
        architecture()
    ));
    let mut peak = 0;
    while !ready.exists() {
        if started.elapsed() > Duration::from_secs(300) {
            fail(&format!("{mib} MiB: not fetched within 5 minutes"));
        }
        if let Ok(Some(status)) = agent.try_wait() {
            fail(&format!("the agent exited: {status}"));
        }
        peak = peak.max(memory(pid).1);
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    peak = peak.max(memory(pid).1);
    let _ = agent.kill();
    let _ = agent.wait();
    Figure {
        mib,
        idle,
        peak,
        took,
    }
}

fn main() {
    let port = free_port();
    let mut broker = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot run mosquitto (apt-get install mosquitto): {e}"
            ))
        });
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "package", "idle KiB", "peak KiB", "+KiB", "seconds", "MiB/s"
    );
    let figures: Vec<Figure> = [2, 20].iter().map(|mib| fetch(port, *mib)).collect();
    for f in &figures {
        println!(
            "{:>5} MiB {:>10} {:>10} {:>10} {:>9.2} {:>8.1}",
            f.mib,
            f.idle,
            f.peak,
            f.peak.saturating_sub(f.idle),
            f.took.as_secs_f64(),
            f.mib as f64 / f.took.as_secs_f64()
        );
    }
    if let [small, large] = &figures[..] {
        println!(
            "peak RSS, 20 MiB over 2 MiB: {:.2} (1.00 = memory does not follow the package's size)",
            large.peak as f64 / small.peak.max(1) as f64
        );
    }
    let _ = broker.kill();
    let _ = broker.wait();
}
