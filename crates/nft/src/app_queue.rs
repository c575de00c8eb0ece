//! The contract between the emitted ruleset and the NFQUEUE classifier (`rampart-nfq`) for
//! application-protocol rules ([`rampart_ir::AppMatch`]).
//!
//! This kernel has no nft `queue` statement, so the ruleset *marks* the packets that
//! application-protocol rules must inspect and `iptables-nft`/`ip6tables-nft` rules (installed
//! by `rampart-nft-apply` next to the table, see [`queue_rules`]) queue packets carrying that
//! mark: `-t security -A INPUT|FORWARD|OUTPUT -m mark --mark INSPECT_MARK/MARK_MASK -m comment
//! --comment rampart-nfq:<table> -j NFQUEUE --queue-num QUEUE_NUM [--queue-bypass]`
//! (`--queue-bypass` when the policy fails open). The `security` table's chains run at
//! priority 150, after Rampart's filter chains (priority 0), so only packets Rampart did not
//! drop are queued. The classifier marks a connection it blocked with `BLOCKED_CT_MARK` in the
//! conntrack mark, and the ruleset drops packets of such connections before anything else in
//! the application step; `ACCEPTED_CT_MARK` ends inspection of a connection.
//!
//! How the ruleset marks (chain `app_<hook>`, jumped to from each base chain after the SYN
//! proxy step and before the conntrack step):
//! 1. `ct mark & MARK_MASK == BLOCKED_CT_MARK` → drop; `== ACCEPTED_CT_MARK` → return.
//! 2. The first packet of a TCP/UDP connection (`ct state new`, original direction) matching an
//!    application-protocol rule's static fields (zones, peers, family, services; in the rule's
//!    direction) gets `INSPECT_CT_MARK` in the conntrack mark; the connection is a candidate
//!    from then on, in both directions and whichever hook its replies cross.
//! 3. ICMP/ICMPv6 echo requests matching such a rule get `INSPECT_MARK` (every one of them).
//! 4. Payload-carrying TCP/UDP packets of candidate connections (conntrack mark still
//!    `INSPECT_CT_MARK`: undecided) get `INSPECT_MARK`, however many there were before: the
//!    ruleset does not count; the inspection budget
//!    ([`rampart_ir::APP_INSPECT_MAX_PACKETS`] inspected payload packets) is the classifier's,
//!    which then releases the connection with `ACCEPTED_CT_MARK`.
//!
//! The classifier decides which application rule applies from the queued packet and the
//! conntrack original tuple; the ruleset only says "inspect". Notes for the classifier: a
//! queued reply-direction packet carries the connection's addresses swapped; segments without
//! payload (SYN, SYN-ACK, pure ACK, bare FIN) are never queued, so failing closed without a
//! classifier drops the payload, not the handshake; and a connection is queued until the
//! classifier sets `ACCEPTED_CT_MARK` or `BLOCKED_CT_MARK`, so it must set one of them for every
//! connection it decides (including one it releases at the end of its budget), and must answer
//! packets queued before the mark lands from its own table.
//!
//! Only the bits in [`MARK_MASK`] are Rampart's; the others are left to whoever else uses marks
//! (Docker, WireGuard, policy routing).

use rampart_ir::Policy;

use crate::EmitOptions;

/// Bits of the packet mark and conntrack mark that Rampart uses.
pub const MARK_MASK: u32 = 0x00f0_0000;
/// Packet mark: "send to the classifier".
pub const INSPECT_MARK: u32 = 0x0010_0000;
/// Conntrack mark: "this connection matched an application-protocol rule's static fields;
/// its first payload packets go to the classifier" (set by the ruleset, never by the
/// classifier; the classifier overwrites it with one of the two below).
pub const INSPECT_CT_MARK: u32 = 0x0010_0000;
/// Packet mark the classifier puts (with an accept verdict) on the packet an application rule
/// with `action = "reject"` blocked: the ruleset's `app_reject_<hook>` base chains (priority
/// [`REJECT_PRIORITY`], after the queue rules) reject it as a reject rule would (TCP reset to
/// its sender, else ICMP administratively prohibited). An accept verdict continues with the
/// hook's later chains, which is why the reject sits after the queue (`NF_REPEAT` would only
/// re-run the iptables chain that queued the packet).
pub const REJECT_MARK: u32 = 0x0020_0000;
/// Priority of the `app_reject_<hook>` chains: after the queue rules (iptables `security`, 150).
pub const REJECT_PRIORITY: i32 = 200;
/// Conntrack mark: "the classifier blocked this connection".
pub const BLOCKED_CT_MARK: u32 = 0x0020_0000;
/// Conntrack mark: "the classifier accepted this connection; stop inspecting it".
pub const ACCEPTED_CT_MARK: u32 = 0x0030_0000;
/// The NFQUEUE number the classifier listens on.
pub const QUEUE_NUM: u16 = 4210;
/// The iptables table the queue rules live in (priority 150: after Rampart's filter chains).
pub const QUEUE_TABLE: &str = "security";

/// One iptables-nft rule that queues marked packets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct QueueRule {
    /// `ip6tables-nft` (IPv6) rather than `iptables-nft` (IPv4).
    pub v6: bool,
    /// The rule as `iptables -S` prints it: `-A CHAIN …` (in table [`QUEUE_TABLE`]).
    pub spec: String,
}

/// The comment that identifies Rampart's queue rules for table `table` (no spaces, so
/// `iptables -S` prints it unquoted and listings compare byte for byte).
pub fn queue_comment(table: &str) -> String {
    format!("rampart-nfq:{table}")
}

/// The queue rules `policy` needs: none without (live) application-protocol rules; else one
/// per family and hook (INPUT, FORWARD, OUTPUT: a connection's replies cross another hook than
/// its first packet), with `--queue-bypass` when the policy fails open. With
/// `classifier_queues` N > 1 the target is `--queue-balance Q:Q+N-1` instead of
/// `--queue-num Q` (iptables refuses a one-queue balance, so one queue keeps `--queue-num`).
pub fn queue_rules(policy: &Policy, opts: &EmitOptions) -> Vec<QueueRule> {
    let live = policy.rules.iter().any(|r| {
        r.app.is_some() && !matches!((opts.today, r.expires), (Some(t), Some(e)) if e < t)
    });
    if !live {
        return Vec::new();
    }
    let bypass = if policy.defaults.classifier_fail_open {
        " --queue-bypass"
    } else {
        ""
    };
    let queues = policy.defaults.classifier_queues.max(1);
    let target = if queues == 1 {
        format!("--queue-num {QUEUE_NUM}")
    } else {
        // QUEUE_NUM + MAX_CLASSIFIER_QUEUES - 1 is far below 65535.
        format!("--queue-balance {QUEUE_NUM}:{}", QUEUE_NUM + (queues - 1))
    };
    let mut out = Vec::new();
    for v6 in [false, true] {
        for chain in ["INPUT", "FORWARD", "OUTPUT"] {
            out.push(QueueRule {
                v6,
                spec: format!(
                    "-A {chain} -m mark --mark 0x{INSPECT_MARK:x}/0x{MARK_MASK:x} -m comment --comment {} -j NFQUEUE {target}{bypass}",
                    queue_comment(&opts.table)
                ),
            });
        }
    }
    out
}

/// Whether a rule is emitted (not expired as of `opts.today`).
fn live(opts: &EmitOptions, r: &rampart_ir::Rule) -> bool {
    !matches!((opts.today, r.expires), (Some(t), Some(e)) if e < t)
}

/// Whether the emitted ruleset proxies SYNs (a SYN proxy rule that is not expired).
pub fn proxies_syns(policy: &Policy, opts: &EmitOptions) -> bool {
    policy
        .rules
        .iter()
        .any(|r| r.synproxy.is_some() && live(opts, r))
}

/// Kernel settings a policy needs, as (sysctl name, value): the SYN proxy needs SYN cookies
/// and strict TCP pickup (`nf_conntrack_tcp_loose = 0`, else conntrack adopts the cookie ACK
/// as a mid-stream connection and the proxy never sees it); application-protocol rules ask for
/// conntrack accounting (`nf_conntrack_acct = 1`: the ruleset no longer reads `ct packets`
/// since the classifier owns the inspection budget, but the per-connection counters are what
/// an operator reads with `conntrack -L` to see how long connections stayed queued).
/// Network-namespace local: `rampart-nft-apply` sets them only where it applies the table.
pub fn required_sysctls(policy: &Policy, opts: &EmitOptions) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if proxies_syns(policy, opts) {
        out.push(("net.ipv4.tcp_syncookies".to_string(), "1".to_string()));
        out.push((
            "net.netfilter.nf_conntrack_tcp_loose".to_string(),
            "0".to_string(),
        ));
    }
    if policy
        .rules
        .iter()
        .any(|r| r.app.is_some() && live(opts, r))
    {
        out.push((
            "net.netfilter.nf_conntrack_acct".to_string(),
            "1".to_string(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_ir::{Action, AppMatch, AppProtocol, Direction, Rule};

    #[test]
    fn marks_do_not_overlap_and_stay_in_the_mask() {
        for m in [
            INSPECT_MARK,
            INSPECT_CT_MARK,
            BLOCKED_CT_MARK,
            ACCEPTED_CT_MARK,
        ] {
            assert_eq!(m & !MARK_MASK, 0);
        }
        let ct = [INSPECT_CT_MARK, BLOCKED_CT_MARK, ACCEPTED_CT_MARK];
        for (i, a) in ct.iter().enumerate() {
            for b in &ct[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn queue_rules_follow_app_rules_and_fail_open() {
        let mut p = Policy::default();
        let opts = EmitOptions::default();
        assert!(queue_rules(&p, &opts).is_empty());
        assert!(required_sysctls(&p, &opts).is_empty());
        let mut r = Rule::new("dns-only", Direction::Forward, Action::Drop);
        r.app = Some(AppMatch {
            protocols: vec![AppProtocol::Dns],
            negate: true,
        });
        p.rules.push(r);
        let q = queue_rules(&p, &opts);
        assert_eq!(q.len(), 6);
        assert!(q.iter().all(|r| !r.spec.contains("bypass")));
        assert_eq!(
            q[0].spec,
            "-A INPUT -m mark --mark 0x100000/0xf00000 -m comment --comment rampart-nfq:rampart -j NFQUEUE --queue-num 4210"
        );
        p.defaults.classifier_fail_open = true;
        assert!(queue_rules(&p, &opts)
            .iter()
            .all(|r| r.spec.ends_with(" --queue-bypass")));
        assert_eq!(
            required_sysctls(&p, &opts),
            vec![("net.netfilter.nf_conntrack_acct".into(), "1".into())]
        );
        // Several queues: every rule balances over the range, bypass kept where it was.
        p.defaults.classifier_queues = 4;
        let q = queue_rules(&p, &opts);
        assert_eq!(q.len(), 6);
        assert_eq!(
            q[0].spec,
            "-A INPUT -m mark --mark 0x100000/0xf00000 -m comment --comment rampart-nfq:rampart -j NFQUEUE --queue-balance 4210:4213 --queue-bypass"
        );
        assert!(q
            .iter()
            .all(|r| r.spec.contains(" --queue-balance 4210:4213 ")
                && !r.spec.contains("--queue-num")));
        p.defaults.classifier_fail_open = false;
        assert!(queue_rules(&p, &opts)
            .iter()
            .all(|r| r.spec.ends_with(" --queue-balance 4210:4213")));
    }
}
