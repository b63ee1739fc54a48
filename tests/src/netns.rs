//! A network made of Linux network namespaces for partition tests: sides `0..n`, each a
//! namespace with one veth link to a bridge in the test's own namespace, all on one subnet, so
//! the test process reaches every side while [`Lab::isolate`] cuts one side off from all the
//! others: both ends get permanent neighbour entries giving the other's address a MAC address no
//! one has, so frames between them go nowhere and are dropped silently — connections hang and
//! connects time out, as on a real partition (not refused at once, as a blackhole route would).
//! Only iproute2 (no `tc` classifiers or iptables, which a kernel or image may lack). Needs
//! root. Dropping the lab deletes the namespaces, links and bridge.

use std::process::Command;

/// The lab's subnet (/24): the bridge in the test's namespace is `.1`, side `i` is `.(2 + i)`.
const SUBNET: &str = "10.213.77";
const BRIDGE: &str = "wq-part-br";
/// Most sides a lab has (namespace and link names, addresses).
pub const SIDES_MAX: usize = 8;
/// The MAC address a side sends a cut-off side's frames to: locally administered, on no
/// interface.
const NOWHERE_MAC: &str = "02:00:00:de:ad:01";

/// One side of the lab: a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side(pub usize);

impl Side {
    /// The namespace's name.
    pub fn netns(self) -> String {
        format!("wq-part-{}", self.0)
    }

    /// The side's address.
    pub fn ip(self) -> String {
        format!("{SUBNET}.{}", 2 + self.0)
    }

    /// Its link's end in the test's namespace.
    fn link(self) -> String {
        format!("wq-part-{}h", self.0)
    }
}

/// The sides and the bridge joining them (see the module's note).
#[derive(Debug)]
pub struct Lab {
    sides: usize,
}

/// Runs `ip ARGS`: its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())) }
}

fn in_ns(side: Side, args: &[&str]) -> Result<(), String> {
    let ns = side.netns();
    let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
    all.extend_from_slice(args);
    ip(&all)
}

/// Removes what an earlier, aborted run may have left.
fn remove_leftovers() {
    for side in (0..SIDES_MAX).map(Side) {
        let _ = ip(&["netns", "del", &side.netns()]);
        let _ = ip(&["link", "del", &side.link()]);
    }
    let _ = ip(&["link", "del", BRIDGE]);
}

impl Lab {
    /// Makes `sides` namespaces, their links and the bridge; why not, when this machine cannot
    /// (not root, no `ip`, namespaces not allowed).
    ///
    /// # Errors
    /// The first `ip` command that failed, with its message.
    ///
    /// # Panics
    /// More than [`SIDES_MAX`] sides.
    pub fn new(sides: usize) -> Result<Self, String> {
        assert!(sides <= SIDES_MAX, "a lab has at most {SIDES_MAX} sides");
        remove_leftovers();
        let lab = Lab { sides };
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{SUBNET}.1/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        for side in lab.sides() {
            let (ns, link) = (side.netns(), side.link());
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &link, "master", BRIDGE, "up"])?;
            in_ns(side, &["addr", "add", &format!("{}/24", side.ip()), "dev", "eth0"])?;
            in_ns(side, &["link", "set", "eth0", "up"])?;
            in_ns(side, &["link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn sides(&self) -> impl Iterator<Item = Side> {
        (0..self.sides).map(Side)
    }

    /// The test's own address on the lab's bridge (every side reaches it, cut off or not).
    pub fn host_ip(&self) -> String {
        format!("{SUBNET}.1")
    }

    /// A CA and a server certificate for every lab address (and 127.0.0.1), written to `dir`:
    /// (certificate, key, CA) files, as brokers, name servers and controller nodes take them.
    pub fn certificates(&self, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "wasmq partition-test CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("CA key")).expect("CA certificate");
        let mut names: Vec<String> = self.sides().map(Side::ip).collect();
        names.push(self.host_ip());
        names.push("127.0.0.1".into());
        let mut params = rcgen::CertificateParams::new(names).expect("server parameters");
        params.distinguished_name.push(rcgen::DnType::CommonName, "wasmq partition test");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        let files = (dir.join("server.pem"), dir.join("server-key.pem"), dir.join("ca.pem"));
        std::fs::write(&files.0, cert.pem()).expect("write the certificate");
        std::fs::write(&files.1, key.serialize_pem()).expect("write the key");
        std::fs::write(&files.2, ca.pem()).expect("write the CA");
        files
    }

    /// A command that runs `program` inside `side`'s namespace (`ip netns exec` execs it: the
    /// child's pid is the program's own, so signals reach it).
    pub fn command(&self, side: Side, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &side.netns()]).arg(program);
        c
    }

    /// Cuts `side` off from every other side (each end sends the other's frames to a MAC
    /// address no one has). The test's namespace still reaches every side.
    ///
    /// # Errors
    /// An `ip neigh` command failed.
    pub fn isolate(&self, side: Side) -> Result<(), String> {
        for other in self.sides().filter(|o| *o != side) {
            in_ns(side, &["neigh", "replace", &other.ip(), "lladdr", NOWHERE_MAC, "dev", "eth0", "nud", "permanent"])?;
            in_ns(other, &["neigh", "replace", &side.ip(), "lladdr", NOWHERE_MAC, "dev", "eth0", "nud", "permanent"])?;
        }
        Ok(())
    }

    /// Joins `side` to the others again (they find each other by ARP).
    ///
    /// # Errors
    /// An `ip neigh` command failed.
    pub fn rejoin(&self, side: Side) -> Result<(), String> {
        for other in self.sides().filter(|o| *o != side) {
            in_ns(side, &["neigh", "del", &other.ip(), "dev", "eth0"])?;
            in_ns(other, &["neigh", "del", &side.ip(), "dev", "eth0"])?;
        }
        Ok(())
    }

    /// Whether `from` opens a TCP connection to `to` (`ip:port`) within `within`.
    pub fn reaches(&self, from: Side, to: &str, within: std::time::Duration) -> bool {
        let probe = format!(": <>/dev/tcp/{}", to.replace(':', "/"));
        Command::new("ip")
            .args(["netns", "exec", &from.netns(), "timeout", &format!("{:.1}", within.as_secs_f64()), "bash", "-c", &probe])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        remove_leftovers();
    }
}
