//! Scenarios as data: one TOML file per scenario under `lab/scenarios/`, each naming its ATT&CK
//! techniques and its cases — the attack (expected blocked) and its legitimate twin (expected
//! allowed) — as traffic between named hosts of the topology.

use serde::{Deserialize, Serialize};

use crate::LabError;

/// Upper bound on cases in one scenario file (Why: keeps one file's run under a few seconds).
pub const CASES_PER_SCENARIO_MAX: usize = 16;

/// The scenarios shipped with Rampart, embedded so the binary runs the lab from anywhere.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "admin-ingress.toml",
        include_str!("../../../lab/scenarios/admin-ingress.toml"),
    ),
    (
        "anonymity.toml",
        include_str!("../../../lab/scenarios/anonymity.toml"),
    ),
    (
        "cloud-metadata.toml",
        include_str!("../../../lab/scenarios/cloud-metadata.toml"),
    ),
    (
        "cloud-storage.toml",
        include_str!("../../../lab/scenarios/cloud-storage.toml"),
    ),
    (
        "dns-resolvers.toml",
        include_str!("../../../lab/scenarios/dns-resolvers.toml"),
    ),
    (
        "encrypted-exfil.toml",
        include_str!("../../../lab/scenarios/encrypted-exfil.toml"),
    ),
    (
        "file-transfer.toml",
        include_str!("../../../lab/scenarios/file-transfer.toml"),
    ),
    (
        "known-bad.toml",
        include_str!("../../../lab/scenarios/known-bad.toml"),
    ),
    (
        "legacy-name-resolution.toml",
        include_str!("../../../lab/scenarios/legacy-name-resolution.toml"),
    ),
    (
        "mail-egress.toml",
        include_str!("../../../lab/scenarios/mail-egress.toml"),
    ),
    (
        "mqtt.toml",
        include_str!("../../../lab/scenarios/mqtt.toml"),
    ),
    (
        "public-server-egress.toml",
        include_str!("../../../lab/scenarios/public-server-egress.toml"),
    ),
    ("rdp.toml", include_str!("../../../lab/scenarios/rdp.toml")),
    (
        "segmentation.toml",
        include_str!("../../../lab/scenarios/segmentation.toml"),
    ),
    (
        "smb-egress.toml",
        include_str!("../../../lab/scenarios/smb-egress.toml"),
    ),
    (
        "snmp-management.toml",
        include_str!("../../../lab/scenarios/snmp-management.toml"),
    ),
    (
        "stateful-ingress.toml",
        include_str!("../../../lab/scenarios/stateful-ingress.toml"),
    ),
    ("vnc.toml", include_str!("../../../lab/scenarios/vnc.toml")),
];

/// One scenario file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable id (the file stem).
    pub id: String,
    /// ATT&CK techniques the scenario exercises.
    pub techniques: Vec<String>,
    /// One sentence on what is proven.
    pub summary: String,
    /// Cases, attack and legitimate twin.
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// One flow to play.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case does.
    pub name: String,
    /// Client host.
    pub from: String,
    /// Server host (`gw` = the gateway itself).
    pub to: String,
    /// `tcp/PORT`, `udp/PORT` or `icmp/echo`.
    pub traffic: String,
    /// Expected result.
    pub expect: Expectation,
    /// Families to play; default both.
    #[serde(default = "both_families")]
    pub families: Vec<FamilyName>,
}

fn both_families() -> Vec<FamilyName> {
    vec![FamilyName::Ipv4, FamilyName::Ipv6]
}

/// An address family to play a case in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FamilyName {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// Expected or observed outcome of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expectation {
    /// The exchange completes.
    Allowed,
    /// The exchange does not complete.
    Blocked,
}

/// Parsed traffic of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// A TCP connection with a request and a reply.
    Tcp(u16),
    /// A UDP datagram and its reply.
    Udp(u16),
    /// ICMP (v6) echo request and reply.
    IcmpEcho,
}

impl Traffic {
    /// Parse `tcp/445`, `udp/53`, `icmp/echo`.
    pub fn parse(text: &str) -> Option<Self> {
        let (proto, rest) = text.split_once('/')?;
        match proto {
            "tcp" => rest.parse().ok().filter(|p| *p != 0).map(Traffic::Tcp),
            "udp" => rest.parse().ok().filter(|p| *p != 0).map(Traffic::Udp),
            "icmp" if rest == "echo" => Some(Traffic::IcmpEcho),
            _ => None,
        }
    }
}

impl Scenario {
    /// Parse one scenario file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, LabError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| LabError::Scenario {
            file: file.into(),
            message: e.to_string(),
        })?;
        let bad = |message: String| LabError::Scenario {
            file: file.into(),
            message,
        };
        if scenario.cases.is_empty() || scenario.cases.len() > CASES_PER_SCENARIO_MAX {
            return Err(bad(format!(
                "a scenario has 1 to {CASES_PER_SCENARIO_MAX} cases, this one {}",
                scenario.cases.len()
            )));
        }
        for technique in &scenario.techniques {
            if rampart_attack::lookup(technique).is_none() {
                return Err(bad(format!(
                    "technique {technique} is not an M1037 technique"
                )));
            }
        }
        for case in &scenario.cases {
            if Traffic::parse(&case.traffic).is_none() {
                return Err(bad(format!(
                    "case `{}`: traffic `{}` is not tcp/PORT, udp/PORT or icmp/echo",
                    case.name, case.traffic
                )));
            }
            if case.families.is_empty() {
                return Err(bad(format!("case `{}` plays no family", case.name)));
            }
        }
        Ok(scenario)
    }

    /// The built-in scenarios.
    pub fn builtin() -> Result<Vec<Scenario>, LabError> {
        BUILTIN
            .iter()
            .map(|(file, text)| Scenario::parse(file, text))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Topology, DEFAULT_TOPOLOGY};

    #[test]
    fn builtin_scenarios_parse_and_name_real_hosts() {
        let topology = Topology::parse(DEFAULT_TOPOLOGY).unwrap();
        let scenarios = Scenario::builtin().unwrap();
        assert_eq!(scenarios.len(), BUILTIN.len());
        for scenario in &scenarios {
            let file_stem = format!("{}.toml", scenario.id);
            assert!(
                BUILTIN.iter().any(|(f, _)| *f == file_stem),
                "{}",
                scenario.id
            );
            for case in &scenario.cases {
                for (a, b) in [(&case.from, &case.to), (&case.to, &case.from)] {
                    if a == "gw" {
                        continue;
                    }
                    let host = topology
                        .host(a, "")
                        .unwrap_or_else(|| panic!("{}: unknown host {a}", scenario.id));
                    assert!(
                        topology.host(b, &host.segment).is_some(),
                        "{}: unknown host {b}",
                        scenario.id
                    );
                }
                assert!(case.from != "gw" || case.to != "gw", "{}", scenario.id);
            }
        }
    }

    #[test]
    fn every_scenario_has_an_attack_and_a_legitimate_twin() {
        for scenario in Scenario::builtin().unwrap() {
            let blocked = scenario
                .cases
                .iter()
                .any(|c| c.expect == Expectation::Blocked);
            let allowed = scenario
                .cases
                .iter()
                .any(|c| c.expect == Expectation::Allowed);
            assert!(blocked && allowed, "{} lacks a twin", scenario.id);
        }
    }

    #[test]
    fn traffic_forms() {
        assert_eq!(Traffic::parse("tcp/445"), Some(Traffic::Tcp(445)));
        assert_eq!(Traffic::parse("udp/53"), Some(Traffic::Udp(53)));
        assert_eq!(Traffic::parse("icmp/echo"), Some(Traffic::IcmpEcho));
        assert_eq!(Traffic::parse("tcp/0"), None);
        assert_eq!(Traffic::parse("tcp/70000"), None);
        assert_eq!(Traffic::parse("sctp/1"), None);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let err = Scenario::parse(
            "x.toml",
            "id='x'\ntechniques=['T9999']\nsummary='s'\n[[case]]\nname='n'\nfrom='a'\nto='b'\ntraffic='tcp/1'\nexpect='allowed'\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("T9999"), "{err}");
        let err = Scenario::parse(
            "x.toml",
            "id='x'\ntechniques=[]\nsummary='s'\n[[case]]\nname='n'\nfrom='a'\nto='b'\ntraffic='tcp/x'\nexpect='allowed'\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tcp/x"), "{err}");
    }
}
