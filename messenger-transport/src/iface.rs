//! The machine's network interfaces, and where NetBIOS broadcasts go.
//!
//! NetBIOS is a broadcast protocol on one Ethernet segment. A broadcast to
//! 255.255.255.255 leaves by the default route, so on a LAN without one
//! (an isolated admin network, a lab) the kernel refuses it with
//! ENETUNREACH, and on a host with several interfaces it reaches one
//! segment only. So, as nmbd does, every broadcast (name queries,
//! registrations, workgroup datagrams) is sent once per interface, to that
//! interface's own broadcast address. Which interfaces is chosen like
//! Samba's `interfaces` parameter: all that are up, or those named.
//!
//! The list is read afresh for every use: interfaces come and go (DHCP, a
//! VPN, a cable plugged in) while a daemon runs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

/// An up IPv4 interface that can broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`eth0`); for a broadcast address given by hand, the
    /// interface it belongs to, or `-` when none does.
    pub name: String,
    /// Its index (for IP_PKTINFO); 0 when unknown.
    pub index: u32,
    /// Its address; unspecified when a hand-given broadcast address belongs
    /// to no interface.
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub broadcast: Ipv4Addr,
}

impl Interface {
    /// Whether `ip` is on this interface's network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        m != 0 && u32::from(ip) & m == u32::from(self.ip) & m
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.broadcast)
    }
}

/// Every IPv4 address of the machine, up or not, loopback included: for
/// matching and for error messages.
#[derive(Debug, Clone)]
pub struct AddressInfo {
    pub name: String,
    pub index: u32,
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub broadcast: Option<Ipv4Addr>,
    pub up: bool,
    pub loopback: bool,
}

fn v4(s: Option<&nix::sys::socket::SockaddrStorage>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.as_sockaddr_in()).map(|a| a.ip())
}

/// Reads the IPv4 addresses of all interfaces.
pub fn addresses() -> std::io::Result<Vec<AddressInfo>> {
    let mut out = Vec::new();
    for a in getifaddrs().map_err(std::io::Error::from)? {
        let Some(ip) = v4(a.address.as_ref()) else { continue };
        let netmask = v4(a.netmask.as_ref()).unwrap_or(Ipv4Addr::BROADCAST);
        let broadcast = if a.flags.contains(InterfaceFlags::IFF_BROADCAST) {
            // Some drivers leave the broadcast address out; it follows
            // from the address and the mask.
            v4(a.broadcast.as_ref()).or(Some(Ipv4Addr::from(u32::from(ip) | !u32::from(netmask))))
        } else {
            None
        };
        let index = nix::net::if_::if_nametoindex(a.interface_name.as_str()).unwrap_or(0);
        out.push(AddressInfo {
            name: a.interface_name,
            index,
            ip,
            netmask,
            broadcast,
            up: a.flags.contains(InterfaceFlags::IFF_UP) && a.flags.contains(InterfaceFlags::IFF_RUNNING),
            loopback: a.flags.contains(InterfaceFlags::IFF_LOOPBACK),
        });
    }
    Ok(out)
}

/// The interfaces that can carry NetBIOS broadcasts: up, not loopback,
/// with an IPv4 broadcast address.
pub fn broadcast_interfaces(all: &[AddressInfo]) -> Vec<Interface> {
    all.iter()
        .filter(|a| a.up && !a.loopback)
        .filter_map(|a| {
            Some(Interface {
                name: a.name.clone(),
                index: a.index,
                ip: a.ip,
                netmask: a.netmask,
                broadcast: a.broadcast?,
            })
        })
        .collect()
}

/// One entry of an `interfaces` list, in Samba's syntax: an interface name
/// (`eth0`, or a prefix with `*`: `enp*`), an address of the machine
/// (`10.0.0.5`), or a network (`10.0.0.0/24`, `10.0.0.5/255.255.255.0`),
/// whose mask then also gives the broadcast address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSpec {
    Name(String),
    Address(Ipv4Addr),
    Network(Ipv4Addr, Ipv4Addr),
}

impl std::str::FromStr for InterfaceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<InterfaceSpec, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty interface".into());
        }
        if let Some((addr, mask)) = s.split_once('/') {
            let ip: Ipv4Addr = addr.parse().map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
            let netmask = match mask.parse::<u8>() {
                Ok(bits) if bits <= 32 => Ipv4Addr::from(if bits == 0 { 0 } else { u32::MAX << (32 - bits) }),
                Ok(bits) => return Err(format!("a /{bits} network: the prefix must be 0 to 32")),
                Err(_) => mask.parse().map_err(|_| format!("`{mask}` is neither a prefix length nor a netmask"))?,
            };
            return Ok(InterfaceSpec::Network(ip, netmask));
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(InterfaceSpec::Address(ip));
        }
        let valid = s.len() <= 15
            && s.trim_end_matches('*').chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
            && !s.trim_end_matches('*').contains('*');
        if !valid {
            return Err(format!("`{s}` is not an interface name, an address or a network (like `10.0.0.0/24`)"));
        }
        Ok(InterfaceSpec::Name(s.to_string()))
    }
}

impl fmt::Display for InterfaceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceSpec::Name(n) => f.write_str(n),
            InterfaceSpec::Address(ip) => write!(f, "{ip}"),
            InterfaceSpec::Network(ip, mask) => write!(f, "{ip}/{mask}"),
        }
    }
}

impl InterfaceSpec {
    fn matches(&self, a: &AddressInfo) -> bool {
        match self {
            InterfaceSpec::Name(n) => match n.strip_suffix('*') {
                Some(prefix) => a.name.starts_with(prefix),
                None => a.name == *n,
            },
            InterfaceSpec::Address(ip) => a.ip == *ip,
            InterfaceSpec::Network(ip, mask) => u32::from(a.ip) & u32::from(*mask) == u32::from(*ip) & u32::from(*mask),
        }
    }
}

/// Where broadcasts go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Broadcast {
    /// Every up interface with a broadcast address (the default).
    #[default]
    AllInterfaces,
    /// The interfaces matching these entries.
    Interfaces(Vec<InterfaceSpec>),
    /// These broadcast addresses, as given (`--broadcast`, `broadcast:`).
    Addresses(Vec<Ipv4Addr>),
    /// No broadcasts at all (names only from WINS, the hosts map or DNS).
    Off,
}

/// Why there is nowhere to broadcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoBroadcast {
    #[error("cannot read the network interfaces: {0}")]
    Read(String),
    #[error(
        "no network interface to broadcast on: none is up with an IPv4 broadcast address (this machine has: {have}); \
         name one with `interfaces:` in the messenger transport (--interface on the command line), or give a \
         broadcast address (`broadcast:`, --broadcast)"
    )]
    NoneUp { have: String },
    #[error("no up interface matches `interfaces: [{specs}]` (this machine has: {have})")]
    NoMatch { specs: String, have: String },
    #[error("broadcasts are turned off")]
    Off,
}

fn describe(all: &[AddressInfo]) -> String {
    if all.is_empty() {
        return "no IPv4 addresses".into();
    }
    all.iter()
        .map(|a| {
            let state = match (a.up, a.loopback, a.broadcast) {
                (false, _, _) => ", down",
                (true, true, _) => ", loopback",
                (true, false, None) => ", no broadcast",
                _ => "",
            };
            format!("{} {}{state}", a.name, a.ip)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Broadcast {
    /// The interfaces (with their broadcast addresses) to send to now.
    pub fn targets(&self) -> Result<Vec<Interface>, NoBroadcast> {
        if *self == Broadcast::Off {
            return Err(NoBroadcast::Off);
        }
        let all = addresses().map_err(|e| NoBroadcast::Read(e.to_string()))?;
        self.targets_from(&all)
    }

    /// [`Broadcast::targets`] over a given address list (for tests).
    pub fn targets_from(&self, all: &[AddressInfo]) -> Result<Vec<Interface>, NoBroadcast> {
        match self {
            Broadcast::Off => Err(NoBroadcast::Off),
            Broadcast::AllInterfaces => {
                let v = broadcast_interfaces(all);
                if v.is_empty() { Err(NoBroadcast::NoneUp { have: describe(all) }) } else { Ok(v) }
            }
            Broadcast::Interfaces(specs) => {
                let mut v = Vec::new();
                for a in all.iter().filter(|a| a.up && specs.iter().any(|s| s.matches(a))) {
                    // A network entry's mask decides the broadcast address,
                    // as in Samba; otherwise the interface's own.
                    let net = specs.iter().find_map(|s| match s {
                        InterfaceSpec::Network(_, m) if s.matches(a) => Some(*m),
                        _ => None,
                    });
                    let (netmask, broadcast) = match net {
                        Some(m) => (m, Ipv4Addr::from(u32::from(a.ip) | !u32::from(m))),
                        None => match a.broadcast {
                            Some(b) => (a.netmask, b),
                            // Named on purpose (loopback, say): its own
                            // network's broadcast address.
                            None => (a.netmask, Ipv4Addr::from(u32::from(a.ip) | !u32::from(a.netmask))),
                        },
                    };
                    let i = Interface { name: a.name.clone(), index: a.index, ip: a.ip, netmask, broadcast };
                    if !v.contains(&i) {
                        v.push(i);
                    }
                }
                if v.is_empty() {
                    let specs = specs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                    return Err(NoBroadcast::NoMatch { specs, have: describe(all) });
                }
                Ok(v)
            }
            Broadcast::Addresses(addrs) => Ok(addrs
                .iter()
                .map(|b| {
                    // The interface whose network the address is the
                    // broadcast address of, for the source address and for
                    // messages; a stray address is still honoured.
                    let owner = all.iter().find(|a| {
                        a.broadcast == Some(*b)
                            || (u32::from(a.netmask) != 0
                                && u32::from(*b) & u32::from(a.netmask) == u32::from(a.ip) & u32::from(a.netmask))
                    });
                    match owner {
                        Some(a) => Interface {
                            name: a.name.clone(),
                            index: a.index,
                            ip: a.ip,
                            netmask: a.netmask,
                            broadcast: *b,
                        },
                        None => Interface {
                            name: "-".into(),
                            index: 0,
                            ip: Ipv4Addr::UNSPECIFIED,
                            netmask: Ipv4Addr::UNSPECIFIED,
                            broadcast: *b,
                        },
                    }
                })
                .collect()),
        }
    }
}

/// The local address to announce to `peer`: that of the interface whose
/// network holds it, else none (the caller asks the routing table).
pub fn address_facing(all: &[AddressInfo], peer: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V4(peer) = peer else { return None };
    all.iter()
        .filter(|a| a.up)
        .find(|a| a.ip == peer)
        .or_else(|| {
            all.iter()
                .filter(|a| a.up && !a.loopback && u32::from(a.netmask) != 0)
                .find(|a| u32::from(a.ip) & u32::from(a.netmask) == u32::from(peer) & u32::from(a.netmask))
        })
        .map(|a| a.ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, ip: [u8; 4], prefix: u32, up: bool, loopback: bool) -> AddressInfo {
        let ip = Ipv4Addr::from(ip);
        let netmask = Ipv4Addr::from(u32::MAX << (32 - prefix));
        let broadcast = (!loopback).then(|| Ipv4Addr::from(u32::from(ip) | !u32::from(netmask)));
        AddressInfo { name: name.into(), index: 1, ip, netmask, broadcast, up, loopback }
    }

    fn machine() -> Vec<AddressInfo> {
        vec![
            addr("lo", [127, 0, 0, 1], 8, true, true),
            addr("eth0", [10, 77, 0, 1], 24, true, false),
            addr("eth1", [10, 78, 0, 1], 16, true, false),
            addr("wlan0", [192, 168, 1, 7], 24, false, false),
        ]
    }

    #[test]
    fn all_up_broadcast_interfaces_by_default() {
        let t = Broadcast::AllInterfaces.targets_from(&machine()).unwrap();
        let got: Vec<(String, Ipv4Addr)> = t.iter().map(|i| (i.name.clone(), i.broadcast)).collect();
        assert_eq!(
            got,
            vec![("eth0".into(), Ipv4Addr::new(10, 77, 0, 255)), ("eth1".into(), Ipv4Addr::new(10, 78, 255, 255))]
        );
    }

    #[test]
    fn loopback_only_is_a_clear_error() {
        let only_lo = vec![addr("lo", [127, 0, 0, 1], 8, true, true), addr("eth9", [10, 1, 1, 1], 24, false, false)];
        let e = Broadcast::AllInterfaces.targets_from(&only_lo).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("lo 127.0.0.1, loopback") && text.contains("eth9 10.1.1.1, down"), "{text}");
        assert!(text.contains("interfaces:") && text.contains("--broadcast"), "{text}");
    }

    #[test]
    fn samba_style_interface_lists() {
        let m = machine();
        let pick = |specs: &[&str]| {
            let specs = specs.iter().map(|s| s.parse().unwrap()).collect();
            Broadcast::Interfaces(specs).targets_from(&m)
        };
        assert_eq!(pick(&["eth1"]).unwrap()[0].broadcast, Ipv4Addr::new(10, 78, 255, 255));
        assert_eq!(pick(&["eth*"]).unwrap().len(), 2);
        assert_eq!(pick(&["10.77.0.1"]).unwrap()[0].name, "eth0");
        // A network entry's mask gives the broadcast address.
        let narrow = pick(&["10.78.0.0/24"]).unwrap();
        assert_eq!((narrow[0].name.as_str(), narrow[0].broadcast), ("eth1", Ipv4Addr::new(10, 78, 0, 255)));
        let masked = pick(&["10.78.0.1/255.255.255.0"]).unwrap();
        assert_eq!(masked[0].broadcast, Ipv4Addr::new(10, 78, 0, 255));
        // Down interfaces never match; nothing matching is an error.
        let e = pick(&["wlan0"]).unwrap_err();
        assert!(matches!(e, NoBroadcast::NoMatch { .. }), "{e}");
        // Loopback, named on purpose.
        assert_eq!(pick(&["lo"]).unwrap()[0].broadcast, Ipv4Addr::new(127, 255, 255, 255));
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in ["", "10.0.0.0/33", "10.0.0.0/abc", "300.1.1.1/24", "e*th", "a-very-long-interface-name"] {
            assert!(bad.parse::<InterfaceSpec>().is_err(), "{bad:?} should be refused");
        }
        assert_eq!("enp*".parse::<InterfaceSpec>().unwrap(), InterfaceSpec::Name("enp*".into()));
    }

    #[test]
    fn given_addresses_find_their_interface() {
        let t = Broadcast::Addresses(vec![Ipv4Addr::new(10, 77, 0, 255), Ipv4Addr::BROADCAST])
            .targets_from(&machine())
            .unwrap();
        assert_eq!((t[0].name.as_str(), t[0].ip), ("eth0", Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!((t[1].name.as_str(), t[1].ip), ("-", Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn the_address_facing_a_peer() {
        let m = machine();
        let f = |ip: [u8; 4]| address_facing(&m, IpAddr::V4(Ipv4Addr::from(ip)));
        assert_eq!(f([10, 77, 0, 9]), Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(f([10, 78, 3, 4]), Some(Ipv4Addr::new(10, 78, 0, 1)));
        assert_eq!(f([127, 0, 0, 1]), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(f([8, 8, 8, 8]), None);
        assert_eq!(f([192, 168, 1, 9]), None, "a down interface does not answer");
    }

    #[test]
    fn this_machine_can_be_read() {
        // Whatever the machine has, reading it works and loopback is there.
        let all = addresses().unwrap();
        assert!(all.iter().any(|a| a.loopback && a.ip.is_loopback()), "{all:?}");
    }
}
