//! Hardware PWM through the kernel's PWM class (`/sys/class/pwm`), for the
//! character-device backend, which cannot set a pin's function itself: the
//! device tree does that at boot (the `pwm` overlay on a Raspberry Pi), so
//! a pin is PWM only when the tree routes a PWM channel to it. This module
//! reads that routing from the tree, says which `dtoverlay` line is missing
//! when it is not there, and programs the channel.
//!
//! It knows no config and no GPIO lines. Every path is under a root it is
//! handed (`/` on a Pi), so its tests build a small sysfs of their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::header::{Function, HardwarePwm};

/// Where a pin's hardware PWM comes from, or why it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `chip` (a `/sys/class/pwm/pwmchipN` directory) drives the pin on
    /// `channel`: the device tree set the pin's function at boot.
    Routed { chip: PathBuf, channel: u32 },
    /// No PWM chip routes this pin; the words say which overlay would.
    Missing(String),
}

/// The BCM283x function-select code of an ALT function, as device trees
/// write it in `brcm,function` (and as the `pwm` overlay's `func` takes it).
fn fsel(function: Function) -> u32 {
    match function {
        Function::Output => 1,
        Function::Alt0 => 4,
        Function::Alt3 => 7,
        Function::Alt5 => 2,
    }
}

/// The overlay that routes `pin`'s PWM channel to it, in words.
pub(crate) fn overlay_advice(pin: u8, hw: HardwarePwm) -> String {
    format!(
        "GPIO{pin}: hardware PWM needs the kernel's PWM routed to this pin, and the device tree \
         does not route PWM{} to GPIO{pin}: add `dtoverlay=pwm,pin={pin},func={}` to \
         config.txt (/boot/firmware/config.txt) and reboot (`dtoverlay=pwm-2chan` with `pin2`, \
         `func2` for two channels)",
        hw.channel,
        fsel(hw.function)
    )
}

/// Which PWM chip, if any, the device tree under `root` routes to `pin` in
/// the function `hw` names.
pub(crate) fn route(root: &Path, pin: u8, hw: HardwarePwm) -> Route {
    let class = root.join("sys/class/pwm");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Route::Missing(overlay_advice(pin, hw));
    };
    let tree = root.join("sys/firmware/devicetree/base");
    let mut chips: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pwmchip"))
        })
        .collect();
    chips.sort();
    for chip in chips {
        let node = chip.join("device/of_node");
        if !enabled(&node) {
            continue;
        }
        let phandles = cells(&node.join("pinctrl-0"));
        if phandles
            .iter()
            .any(|&p| routes(&tree, p, pin, fsel(hw.function)))
        {
            return Route::Routed {
                chip,
                channel: u32::from(hw.channel),
            };
        }
    }
    Route::Missing(overlay_advice(pin, hw))
}

fn enabled(node: &Path) -> bool {
    match std::fs::read(node.join("status")) {
        Ok(status) => {
            let status = String::from_utf8_lossy(&status);
            let status = status.trim_end_matches('\0');
            status == "okay" || status == "ok"
        }
        // A node without status is enabled; without the node, there is none.
        Err(_) => node.is_dir(),
    }
}

/// Big-endian 32-bit cells of a device-tree property; empty when absent.
fn cells(path: &Path) -> Vec<u32> {
    std::fs::read(path)
        .map(|bytes| {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the pin-control node with `phandle` puts `pin` in `function`.
fn routes(tree: &Path, phandle: u32, pin: u8, function: u32) -> bool {
    let Some(node) = find_phandle(tree, phandle, 0) else {
        return false;
    };
    let pins = cells(&node.join("brcm,pins"));
    let functions = cells(&node.join("brcm,function"));
    pins.iter().enumerate().any(|(i, &p)| {
        // One function for every pin, or one per pin.
        let f = if functions.len() == 1 {
            functions.first()
        } else {
            functions.get(i)
        };
        p == u32::from(pin) && f == Some(&function)
    })
}

fn find_phandle(dir: &Path, phandle: u32, depth: u8) -> Option<PathBuf> {
    // A device tree is a few levels deep; the bound keeps a looping
    // filesystem from holding us.
    if depth > 8 {
        return None;
    }
    if cells(&dir.join("phandle")) == [phandle] {
        return Some(dir.to_path_buf());
    }
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.filter_map(Result::ok) {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            if let Some(found) = find_phandle(&entry.path(), phandle, depth + 1) {
                return Some(found);
            }
        }
    }
    None
}

/// One exported PWM channel.
#[derive(Debug)]
pub(crate) struct KernelPwm {
    dir: PathBuf,
    period_ns: u64,
    duty_ns: u64,
    enabled: bool,
}

/// The period a level is held with (1 kHz): any will do at 0 % and 100 %.
const LEVEL_PERIOD_NS: u64 = 1_000_000;

impl KernelPwm {
    /// Exports `channel` of `chip` (already exported is fine) and waits for
    /// its files, which udev may still be handing to the gpio group.
    pub(crate) fn open(chip: &Path, channel: u32) -> Result<KernelPwm, String> {
        let dir = chip.join(format!("pwm{channel}"));
        if !dir.is_dir() {
            let export = chip.join("export");
            if let Err(e) = std::fs::write(&export, channel.to_string()) {
                // EBUSY: exported meanwhile, by us before or by someone else.
                if e.raw_os_error() != Some(16) {
                    return Err(io_words(&export, &e));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let period = dir.join("period");
        loop {
            let ready = std::fs::OpenOptions::new().write(true).open(&period);
            match ready {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => return Err(io_words(&period, &e)),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(KernelPwm {
            period_ns: read("period"),
            duty_ns: read("duty_cycle"),
            enabled: read("enable") == 1,
            dir,
        })
    }

    /// Runs at `hz` with `duty` (0.0–1.0).
    pub(crate) fn set(&mut self, duty: f64, hz: f64) -> Result<(), String> {
        let period = (1e9 / hz).round().clamp(1.0, 4e9) as u64;
        let duty = (period as f64 * duty.clamp(0.0, 1.0)).round() as u64;
        self.program(period, duty)
    }

    /// Holds a level: 100 % or 0 % duty, the pin staying the PWM's.
    pub(crate) fn level(&mut self, high: bool) -> Result<(), String> {
        let period = if self.period_ns > 0 {
            self.period_ns
        } else {
            LEVEL_PERIOD_NS
        };
        self.program(period, if high { period } else { 0 })
    }

    fn program(&mut self, period: u64, duty: u64) -> Result<(), String> {
        // The kernel refuses a duty longer than the period at every step:
        // shrink the duty before the period, grow it after.
        if duty < self.duty_ns || period < self.duty_ns {
            self.write("duty_cycle", duty)?;
            self.write("period", period)?;
        } else {
            self.write("period", period)?;
            self.write("duty_cycle", duty)?;
        }
        if !self.enabled {
            self.write("enable", 1)?;
            self.enabled = true;
        }
        Ok(())
    }

    fn write(&mut self, name: &str, value: u64) -> Result<(), String> {
        let path = self.dir.join(name);
        std::fs::write(&path, value.to_string()).map_err(|e| io_words(&path, &e))?;
        match name {
            "period" => self.period_ns = value,
            "duty_cycle" => self.duty_ns = value,
            _ => {}
        }
        Ok(())
    }

    /// Whether it runs, and at what (`duty`, `hz`), for logs and checks.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} period {} ns duty {} ns{}",
            self.dir.display(),
            self.period_ns,
            self.duty_ns,
            if self.enabled { "" } else { " (disabled)" }
        )
    }
}

fn io_words(path: &Path, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(13 | 1) => format!(
            "permission denied writing {}: the kernel's PWM files belong to root; the pinpost \
             package's udev rule (/usr/lib/udev/rules.d/60-pinpost.rules) gives them to the \
             gpio group, of which the user must be a member",
            path.display()
        ),
        Some(30) => format!(
            "{} is read-only here: under the pinpost service only pwmchip0 and pwmchip2 are \
             writable (ReadWritePaths= in pinpost.service)",
            path.display()
        ),
        _ => format!(
            "cannot write {}: {}",
            path.display(),
            crate::words::io_words(e)
        ),
    }
}

#[cfg(test)]
mod tests;
