//! A small builder for hand-written IR policies (the TOML front-end is tested elsewhere).

#![allow(dead_code)]

use rampart_ir::*;

pub fn loc(line: u32) -> SourceLoc {
    SourceLoc {
        file: "policy.toml".into(),
        line,
        col: 1,
    }
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("test network")
}

pub fn tcp(port: u16) -> L4Match {
    l4(proto::TCP, &[(port, port)])
}

pub fn udp(port: u16) -> L4Match {
    l4(proto::UDP, &[(port, port)])
}

pub fn l4(p: u8, ports: &[(u16, u16)]) -> L4Match {
    L4Match {
        protocol: Some(p),
        src_ports: vec![],
        dst_ports: ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
        icmp_types: vec![],
        service: None,
    }
}

pub fn named(mut m: L4Match, name: &str) -> L4Match {
    m.service = Some(name.into());
    m
}

/// Builds a policy line by line: every zone, set and rule gets the next source line.
pub struct B {
    pub p: Policy,
    line: u32,
}

impl Default for B {
    fn default() -> Self {
        Self::new()
    }
}

impl B {
    pub fn new() -> Self {
        let mut p = Policy::default();
        p.defaults.loc = loc(1);
        B { p, line: 1 }
    }

    fn next(&mut self) -> SourceLoc {
        self.line += 1;
        loc(self.line)
    }

    pub fn zone(&mut self, name: &str, ifaces: &[&str], nets: &[&str], trusted: bool) -> Peer {
        self.zone_full(name, ifaces, nets, trusted, false)
    }

    pub fn zone_full(
        &mut self,
        name: &str,
        ifaces: &[&str],
        nets: &[&str],
        trusted: bool,
        public_facing: bool,
    ) -> Peer {
        let loc = self.next();
        self.p.zones.push(Zone {
            name: name.into(),
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            networks: nets.iter().map(|s| net(s)).collect(),
            trusted,
            public_facing,
            description: None,
            loc,
        });
        Peer::Zone(ZoneId(self.p.zones.len() as u32 - 1))
    }

    pub fn set(&mut self, name: &str, nets: &[&str]) -> Peer {
        let loc = self.next();
        self.p.sets.push(AddressSet {
            name: name.into(),
            elements: nets.iter().map(|s| net(s)).collect(),
            source: SetSource::Inline,
            except: vec![],
            loc,
        });
        Peer::Set(SetId(self.p.sets.len() as u32 - 1))
    }

    pub fn feed(&mut self, name: &str, format: &str) -> Peer {
        let loc = self.next();
        self.p.sets.push(AddressSet {
            name: name.into(),
            elements: vec![],
            source: SetSource::Feed {
                name: name.into(),
                url: format!("https://feeds.example/{name}"),
                format: format.into(),
                refresh_s: 3600,
            },
            except: vec![],
            loc,
        });
        Peer::Set(SetId(self.p.sets.len() as u32 - 1))
    }

    pub fn component(&mut self, kind: ComponentKind) {
        let loc = self.next();
        self.p.components.push(Component { kind, loc });
    }

    /// Adds a rule and returns a handle to tweak it.
    pub fn rule(
        &mut self,
        name: &str,
        direction: Direction,
        from: Vec<Peer>,
        to: Vec<Peer>,
        services: Vec<L4Match>,
        action: Action,
    ) -> &mut Rule {
        let loc = self.next();
        self.p.rules.push(Rule {
            name: name.into(),
            direction,
            from,
            to,
            services,
            family: Family::Any,
            ct_states: vec![],
            owner: None,
            limit: None,
            conn_limit: None,
            synproxy: None,
            ban: None,
            app: None,
            action,
            log: false,
            mitigates: vec![],
            expires: None,
            description: None,
            origin: RuleOrigin::User,
            loc,
        });
        self.p.rules.last_mut().expect("just pushed")
    }

    pub fn build(self) -> Policy {
        self.p
    }
}

pub fn date(year: u16, month: u8, day: u8) -> Date {
    Date { year, month, day }
}

pub fn tech(ids: &[&str]) -> Vec<TechniqueId> {
    ids.iter().map(|s| TechniqueId(s.to_string())).collect()
}
