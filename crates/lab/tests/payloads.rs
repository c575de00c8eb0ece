//! The lab's protocol payloads are what they claim to be: the same labeller the engine and the
//! NFQUEUE classifier use (`rampart_engine::app::label`) names each request and reply with the
//! protocol a case relies on, so a scenario that expects "SSH on 443 blocked" really sends SSH.

use rampart_engine::app::{label, L4};
use rampart_ir::AppProtocol::{self, *};
use rampart_lab::payload::Payload;

fn labels(p: Payload, tcp: bool) -> (Option<AppProtocol>, Option<AppProtocol>) {
    let l4 = if tcp { L4::Tcp } else { L4::Udp };
    (label(l4, &p.request(tcp)), label(l4, &p.reply(tcp)))
}

#[test]
fn each_payload_carries_its_protocol_both_ways() {
    assert_eq!(labels(Payload::Plain, true), (None, None));
    assert_eq!(labels(Payload::Plain, false), (None, None));
    assert_eq!(labels(Payload::Dns, false), (Some(Dns), Some(Dns)));
    assert_eq!(labels(Payload::Dns, true), (Some(Dns), Some(Dns)));
    assert_eq!(labels(Payload::Tls, true), (Some(Tls), Some(Tls)));
    assert_eq!(labels(Payload::Http, true), (Some(Http), Some(Http)));
    assert_eq!(labels(Payload::Ssh, true), (Some(Ssh), Some(Ssh)));
    assert_eq!(labels(Payload::Vnc, true), (Some(Vnc), Some(Vnc)));
    // The X.224 Connection Confirm and the CONNACK are not what the labeller keys on; the
    // request alone decides the connection.
    assert_eq!(labels(Payload::Rdp, true).0, Some(Rdp));
    assert_eq!(labels(Payload::Mqtt, true).0, Some(Mqtt));
}

#[test]
fn smb1_only_sessions_die_at_negotiation_and_multi_dialect_clients_get_smb2() {
    // An SMB1 NEGOTIATE request counts as SMB2 (multi-dialect clients open with one); the
    // server's SMB1 NEGOTIATE response is SMB1.
    assert_eq!(labels(Payload::Smb1, true), (Some(Smb2), Some(Smb1)));
    assert_eq!(labels(Payload::SmbMulti, true), (Some(Smb2), Some(Smb2)));
    assert_eq!(labels(Payload::Smb2, true), (Some(Smb2), Some(Smb2)));
}
