#!/usr/bin/python3
"""Regenerate the DHCPv6 decoder corpus with scapy (python3-scapy): real encodings of the
messages the guard meets, independent of the guard's own frame builders. File names say what
the decoder must do: ok-*.bin decode, fail-*.bin are anomalies. expected.txt lists, for each
ok- file, the message type and the number of addresses the guard would learn from it.

    cd crates/guard/tests/corpus/dhcpv6 && /usr/bin/python3 generate.py
"""
from scapy.layers.dhcp6 import (
    DHCP6_Solicit, DHCP6_Advertise, DHCP6_Request, DHCP6_Reply, DHCP6_Release, DHCP6_RelayReply,
    DHCP6OptClientId, DHCP6OptServerId, DHCP6OptIA_NA, DHCP6OptIA_TA, DHCP6OptIA_PD,
    DHCP6OptIAAddress, DHCP6OptIAPrefix, DHCP6OptStatusCode, DHCP6OptElapsedTime,
    DHCP6OptOptReq, DHCP6OptDNSServers, DHCP6OptDNSDomains, DHCP6OptRapidCommit,
    DHCP6OptRelayMsg, DHCP6OptIfaceId, DUID_LL, DUID_LLT, DUID_EN,
)

CLI = "02:00:00:00:00:0c"
SRV = "02:00:00:00:00:01"
cid = DHCP6OptClientId(duid=DUID_LL(lladdr=CLI))
sid = DHCP6OptServerId(duid=DUID_LLT(lladdr=SRV, timeval=0x2f000000))
addr = lambda a, v: DHCP6OptIAAddress(addr=a, preflft=v // 2, validlft=v)
ok = {
    "ok-solicit-rapid-commit": (1, 0, DHCP6_Solicit(trid=0x616263) / cid / DHCP6OptElapsedTime()
        / DHCP6OptIA_NA(iaid=1) / DHCP6OptRapidCommit() / DHCP6OptOptReq(reqopts=[23, 24])),
    "ok-advertise-dnsmasq-like": (2, 1, DHCP6_Advertise(trid=0x616263) / cid / sid
        / DHCP6OptIA_NA(iaid=1, T1=1800, T2=2880, ianaopts=[addr("2001:db8:1::18f", 3600)])
        / DHCP6OptStatusCode(statuscode=0, statusmsg="success")
        / DHCP6OptDNSServers(dnsservers=["2001:db8:1::1"])),
    "ok-request": (3, 1, DHCP6_Request(trid=0x646566) / cid / sid / DHCP6OptElapsedTime()
        / DHCP6OptIA_NA(iaid=1, ianaopts=[addr("2001:db8:1::18f", 0)])),
    "ok-reply-two-ia-na": (7, 3, DHCP6_Reply(trid=0x646566) / cid / sid
        / DHCP6OptIA_NA(iaid=1, T1=1800, T2=2880, ianaopts=[addr("2001:db8:1::100", 3600), addr("2001:db8:1::101", 3600)])
        / DHCP6OptIA_NA(iaid=2, T1=1800, T2=2880, ianaopts=[addr("2001:db8:1::102", 7200)])
        / DHCP6OptDNSDomains(dnsdomains=["example.org."])),
    "ok-reply-noaddrsavail-in-ia": (7, 0, DHCP6_Reply(trid=0x646566) / cid / sid
        / DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptStatusCode(statuscode=2, statusmsg="no addresses")])),
    "ok-reply-iaaddr-status-fail": (7, 0, DHCP6_Reply(trid=0x646566) / cid / sid
        / DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr="2001:db8:1::100", preflft=0, validlft=0,
            iaaddropts=[DHCP6OptStatusCode(statuscode=3, statusmsg="nobinding")])])),
    "ok-reply-ia-ta-and-pd-ignored": (7, 0, DHCP6_Reply(trid=0x646566) / cid / sid
        / DHCP6OptIA_TA(iaid=3, iataopts=[addr("2001:db8:1::200", 600)])
        / DHCP6OptIA_PD(iaid=4, iapdopt=[DHCP6OptIAPrefix(prefix="2001:db8:100::", plen=56, preflft=600, validlft=1200)])),
    "ok-release-duid-en": (8, 1, DHCP6_Release(trid=0x1) / DHCP6OptClientId(duid=DUID_EN(enterprisenum=32473, id=b"\x01\x02\x03\x04"))
        / sid / DHCP6OptIA_NA(iaid=1, ianaopts=[addr("2001:db8:1::100", 0)])),
    "ok-relay-reply": (13, 0, DHCP6_RelayReply(hopcount=0, linkaddr="2001:db8:1::1", peeraddr="fe80::ff:fe00:c")
        / DHCP6OptIfaceId(ifaceid=b"p_cli")
        / DHCP6OptRelayMsg(message=DHCP6_Reply(trid=7) / cid / sid)),
}
expected = []
for name, (kind, n, pkt) in ok.items():
    open(name + ".bin", "wb").write(bytes(pkt))
    expected.append(f"{name} {kind} {n}")
reply = bytes(ok["ok-reply-two-ia-na"][2])
fail = {
    # Cut inside the second IA_NA.
    "fail-truncated-ia-na": reply[:-30],
    # Client Identifier claiming more bytes than the message has.
    "fail-client-id-overrun": bytes(DHCP6_Solicit(trid=1)) + b"\x00\x01\x01\x00" + bytes(DUID_LL(lladdr=CLI)),
    # IAADDR option with a 20-byte body (address + one lifetime).
    "fail-iaaddr-short": bytes(DHCP6_Reply(trid=1) / cid) + b"\x00\x03\x00\x24" + b"\x00\x00\x00\x01" + b"\x00" * 8
        + b"\x00\x05\x00\x14" + bytes(16) + b"\x00\x00\x0e\x10",
    # Two Client Identifiers (which one would be learned?).
    "fail-duplicate-client-id": bytes(DHCP6_Solicit(trid=1) / cid / cid),
    # Three bytes only.
    "fail-short-header": b"\x07\x00\x00",
}
for name, data in fail.items():
    open(name + ".bin", "wb").write(data)
open("expected.txt", "w").write("\n".join(expected) + "\n")
