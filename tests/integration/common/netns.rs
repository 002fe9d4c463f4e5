//! Network namespaces joined by a veth pair, for tests that need a link
//! that can silently lose packets (a cable pulled, a dead Wi-Fi) or every
//! port free. Needs root and `ip` (iproute2).

use std::process::Command;

use super::process::require_tool;

/// Two network namespaces joined by a veth pair, with addresses that exist
/// only inside them: traffic between them never touches this machine's own
/// interfaces. Removed on drop.
pub struct Netns {
    pub a: String,
    pub b: String,
    /// The b side's interface (in namespace b), to cut the cable.
    pub b_link: String,
    pub a_addr: String,
    pub b_addr: String,
}

impl Netns {
    /// Makes the pair, named for `tag` and this process.
    pub fn pair(tag: &str) -> Netns {
        require_tool("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let n = Netns {
            a: format!("pp-{tag}-a-{id}"),
            b: format!("pp-{tag}-b-{id}"),
            b_link: format!("ppb{id}"),
            a_addr: format!("10.213.{}.2", id % 250),
            b_addr: format!("10.213.{}.1", id % 250),
        };
        let a_link = format!("ppa{id}");
        ip(&["netns", "add", &n.a]);
        ip(&["netns", "add", &n.b]);
        ip(&[
            "link", "add", &a_link, "netns", &n.a, "type", "veth", "peer", "name", &n.b_link,
            "netns", &n.b,
        ]);
        for (ns, link, addr) in [(&n.a, &a_link, &n.a_addr), (&n.b, &n.b_link, &n.b_addr)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", link]);
            ip(&["-n", ns, "link", "set", link, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    /// Unplugs (`false`) or plugs back (`true`) the cable: packets are then
    /// silently lost, as on a dead Wi-Fi link; neither side is told.
    pub fn cable(&self, plugged: bool) {
        let state = if plugged { "up" } else { "down" };
        ip(&["-n", &self.b, "link", "set", &self.b_link, state]);
    }

    /// `program`, to be run inside namespace `ns`.
    pub fn exec(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
