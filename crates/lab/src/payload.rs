//! First payloads of real protocols, for cases that prove "protocol, not port": each kind is a
//! request the client sends and the reply the server answers with, byte for byte what the
//! protocol's own client and server send first (an SSH identification line, a TLS ClientHello
//! and ServerHello, a DNS query and answer, an RFB version, an MQTT CONNECT and CONNACK, SMB
//! negotiations). The exchange counts as allowed only when the exact reply arrives, so a
//! classifier dropping either direction is seen.

use serde::{Deserialize, Serialize};

/// What a case's client and server say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// The lab's own request and reply lines (no protocol at all: "non-DNS on 53").
    #[default]
    Plain,
    /// A DNS query for `example.com A` and its answer (length-prefixed over TCP).
    Dns,
    /// A TLS 1.3 ClientHello record and a ServerHello record.
    Tls,
    /// An HTTP/1.1 GET and a `200 OK`.
    Http,
    /// SSH identification lines (`SSH-2.0-…`) both ways.
    Ssh,
    /// RDP: TPKT + X.224 Connection Request, answered by a Connection Confirm.
    Rdp,
    /// VNC: the RFB ProtocolVersion both ways.
    Vnc,
    /// MQTT CONNECT and CONNACK.
    Mqtt,
    /// An SMB1 NEGOTIATE offering only `NT LM 0.12`; the server answers in SMB1.
    Smb1,
    /// An SMB1 NEGOTIATE also offering `SMB 2.002`/`SMB 2.???`; the server upgrades to SMB2.
    SmbMulti,
    /// An SMB2 NEGOTIATE; SMB2 answer.
    Smb2,
}

/// The lab's plain request line.
pub const PLAIN_REQUEST: &[u8] = b"rampart-lab request\n";
/// The lab's plain reply line.
pub const PLAIN_REPLY: &[u8] = b"rampart-lab reply\n";

/// Largest request or reply of any kind (buffers are sized from it).
pub const PAYLOAD_MAX_BYTES: usize = 256;

const DNS_QUESTION: &[u8] = b"\x07example\x03com\x00\x00\x01\x00\x01";

impl Payload {
    /// Every payload, in declaration order (the lab's own list: a payload is what a case sends,
    /// not a protocol label — `SmbMulti` and `Plain` have no `AppProtocol` of their own).
    pub const ALL: [Payload; 11] = [
        Payload::Plain,
        Payload::Dns,
        Payload::Tls,
        Payload::Http,
        Payload::Ssh,
        Payload::Rdp,
        Payload::Vnc,
        Payload::Mqtt,
        Payload::Smb1,
        Payload::SmbMulti,
        Payload::Smb2,
    ];

    /// The client's first message; `tcp` selects DNS's 2-byte length prefix.
    pub fn request(self, tcp: bool) -> Vec<u8> {
        match self {
            Payload::Plain => PLAIN_REQUEST.to_vec(),
            Payload::Dns => {
                let mut m = b"\x4c\x61\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
                m.extend_from_slice(DNS_QUESTION);
                dns_framing(m, tcp)
            }
            Payload::Tls => tls_record(client_hello()),
            Payload::Http => b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n".to_vec(),
            Payload::Ssh => b"SSH-2.0-rampart_lab\r\n".to_vec(),
            Payload::Rdp => {
                b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00"
                    .to_vec()
            }
            Payload::Vnc => b"RFB 003.008\n".to_vec(),
            Payload::Mqtt => b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00".to_vec(),
            Payload::Smb1 => nbss(smb1_negotiate(&[b"NT LM 0.12"], false)),
            Payload::SmbMulti => nbss(smb1_negotiate(
                &[b"NT LM 0.12", b"SMB 2.002", b"SMB 2.???"],
                false,
            )),
            Payload::Smb2 => nbss(smb2_negotiate(false)),
        }
    }

    /// The server's answer to [`Payload::request`].
    pub fn reply(self, tcp: bool) -> Vec<u8> {
        match self {
            Payload::Plain => PLAIN_REPLY.to_vec(),
            Payload::Dns => {
                let mut m = b"\x4c\x61\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00".to_vec();
                m.extend_from_slice(DNS_QUESTION);
                // example.com A 192.0.2.1, TTL 60, name compressed to the question.
                m.extend_from_slice(
                    b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01",
                );
                dns_framing(m, tcp)
            }
            Payload::Tls => tls_record(server_hello()),
            Payload::Http => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            Payload::Ssh => b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec(),
            Payload::Rdp => {
                b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x00\x08\x00\x01\x00\x00\x00"
                    .to_vec()
            }
            Payload::Vnc => b"RFB 003.008\n".to_vec(),
            Payload::Mqtt => b"\x20\x02\x00\x00".to_vec(),
            // An SMB1-only client gets an SMB1 NEGOTIATE response (the server chose SMB1).
            Payload::Smb1 => nbss(smb1_negotiate(&[], true)),
            Payload::SmbMulti | Payload::Smb2 => nbss(smb2_negotiate(true)),
        }
    }
}

fn dns_framing(message: Vec<u8>, tcp: bool) -> Vec<u8> {
    if !tcp {
        return message;
    }
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&message);
    framed
}

fn tls_record(handshake: Vec<u8>) -> Vec<u8> {
    let mut r = vec![0x16, 0x03, 0x01];
    r.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    r.extend_from_slice(&handshake);
    r
}

fn handshake(kind: u8, body: Vec<u8>) -> Vec<u8> {
    let len = body.len() as u32;
    let mut h = vec![kind, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    h.extend_from_slice(&body);
    h
}

fn client_hello() -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend_from_slice(&[0x11; 32]); // random
    b.push(0); // session id
    b.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    b.extend_from_slice(&[0x01, 0x00]); // null compression
                                        // supported_versions: TLS 1.3.
    b.extend_from_slice(&[0x00, 0x07, 0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    handshake(1, b)
}

fn server_hello() -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend_from_slice(&[0x22; 32]);
    b.push(0);
    b.extend_from_slice(&[0x13, 0x01, 0x00]);
    b.extend_from_slice(&[0x00, 0x06, 0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
    handshake(2, b)
}

/// NetBIOS session message framing (type 0, 24-bit length).
fn nbss(message: Vec<u8>) -> Vec<u8> {
    let len = message.len() as u32;
    let mut m = vec![0, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    m.extend_from_slice(&message);
    m
}

fn smb1_negotiate(dialects: &[&[u8]], reply: bool) -> Vec<u8> {
    let mut h = vec![0xff, b'S', b'M', b'B', 0x72];
    h.extend_from_slice(&[0; 4]); // status
    h.push(if reply { 0x98 } else { 0x18 }); // flags (0x80: reply)
    h.extend_from_slice(&0xc853u16.to_le_bytes()); // flags2
    h.extend_from_slice(&[0; 12]); // pid high, signature, reserved
    h.extend_from_slice(&[0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0]); // tid, pid, uid, mid
    if reply {
        // Word count 17 with the chosen dialect index 0, then no bytes.
        h.push(17);
        h.extend_from_slice(&[0; 34]);
        h.extend_from_slice(&[0, 0]);
    } else {
        h.push(0);
        let d: Vec<u8> = dialects
            .iter()
            .flat_map(|x| {
                let mut v = vec![0x02];
                v.extend_from_slice(x);
                v.push(0);
                v
            })
            .collect();
        h.extend_from_slice(&(d.len() as u16).to_le_bytes());
        h.extend_from_slice(&d);
    }
    h
}

fn smb2_negotiate(reply: bool) -> Vec<u8> {
    let mut h = vec![0xfe, b'S', b'M', b'B', 64, 0];
    h.extend_from_slice(&[0; 2]); // credit charge
    h.extend_from_slice(&[0; 4]); // status
    h.extend_from_slice(&[0, 0]); // command: NEGOTIATE
    h.extend_from_slice(&[1, 0]); // credits
    h.extend_from_slice(&(if reply { 1u32 } else { 0 }).to_le_bytes()); // flags
    h.resize(64, 0);
    if reply {
        h.extend_from_slice(&[65, 0, 1, 0, 0x10, 0x02]); // structure size, security mode, dialect 2.1
        h.resize(64 + 64, 0);
    } else {
        h.extend_from_slice(&[36, 0, 2, 0, 1, 0, 0, 0]); // structure size, 2 dialects, signing
        h.resize(64 + 36, 0);
        h.extend_from_slice(&[0x02, 0x02, 0x10, 0x02]); // 2.0.2, 2.1
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_is_bounded_and_replies_differ_from_requests_where_the_protocol_does() {
        for kind in Payload::ALL {
            for tcp in [false, true] {
                assert!(kind.request(tcp).len() <= PAYLOAD_MAX_BYTES, "{kind:?}");
                assert!(kind.reply(tcp).len() <= PAYLOAD_MAX_BYTES, "{kind:?}");
            }
        }
        assert_eq!(
            Payload::Dns.request(true).len(),
            Payload::Dns.request(false).len() + 2
        );
    }
}
