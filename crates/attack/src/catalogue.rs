// The 50 technique rows of ATT&CK mitigation M1037 "Filter Network Traffic" (version 1.2,
// last modified 11 December 2024), as listed on the seed page: id, name and the mitigation text.
// Footnote markers were removed from the texts.

use crate::Technique;

/// Every technique row of M1037, in the order of the seed page.
pub const TECHNIQUES: &[Technique] = &[
    Technique {
        id: "T1557",
        name: "Adversary-in-the-Middle",
        mitigation: "Use network appliances and host-based security software to block network traffic that is not necessary within the environment, such as legacy protocols that may be leveraged for AiTM conditions.",
    },
    Technique {
        id: "T1557.001",
        name: "LLMNR/NBT-NS Poisoning and SMB Relay",
        mitigation: "Use host-based security software to block LLMNR/NetBIOS traffic. Enabling SMB Signing can stop NTLMv2 relay attacks.",
    },
    Technique {
        id: "T1557.002",
        name: "ARP Cache Poisoning",
        mitigation: "Consider enabling DHCP Snooping and Dynamic ARP Inspection on switches to create mappings between IP addresses requested via DHCP and ARP tables and tie the values to a port on the switch that may block bogus traffic.",
    },
    Technique {
        id: "T1557.003",
        name: "DHCP Spoofing",
        mitigation: "Consider filtering DHCP traffic on ports 67 and 68 to/from unknown or untrusted DHCP servers. Additionally, port security may also be enabled on layer switches. Furthermore, consider enabling DHCP snooping on layer 2 switches as it will prevent DHCP spoofing attacks and starvation attacks. Consider tracking available IP addresses through a script or a tool.",
    },
    Technique {
        id: "T1071",
        name: "Application Layer Protocol",
        mitigation: "Use network appliances to filter ingress or egress traffic and perform protocol-based filtering. Configure software on endpoints to filter network traffic.",
    },
    Technique {
        id: "T1071.001",
        name: "Web Protocols",
        mitigation: "Restrict and monitor outbound web traffic (HTTP/HTTPS) from critical servers to only approved destinations. Limiting the ability to initiate outbound HTTP/HTTPS connections, especially from public-facing servers, can prevent attackers from using tools like curl or wget to communicate with external C2 servers or download malicious payloads.",
    },
    Technique {
        id: "T1071.002",
        name: "File Transfer Protocols",
        mitigation: "Filter outbound FTP/SFTP traffic from sensitive systems, allowing file transfers only to trusted internal or known IP addresses. This measure can prevent attackers from transferring data or payloads via FTP/SFTP channels to or from unauthorized external systems.",
    },
    Technique {
        id: "T1071.003",
        name: "Mail Protocols",
        mitigation: "Limit the ability of servers and critical systems to initiate outbound email communications. Filtering SMTP/IMAP/POP3 traffic to only trusted mail servers reduces the risk of attackers using compromised systems to exfiltrate data via email or to receive commands from attacker-controlled email accounts.",
    },
    Technique {
        id: "T1071.004",
        name: "DNS",
        mitigation: "Consider filtering DNS requests to unknown, untrusted, or known bad domains and resources. Resolving DNS requests with on-premise/proxy servers may also disrupt adversary attempts to conceal data within DNS packets.",
    },
    Technique {
        id: "T1071.005",
        name: "Publish/Subscribe Protocols",
        mitigation: "Consider filtering publish/subscribe protocol requests to untrusted or known bad resources over irregular ports (e.g. MQTT’s standard ports are 1883 or 8883).",
    },
    Technique {
        id: "T1197",
        name: "BITS Jobs",
        mitigation: "Modify network and/or host firewall rules, as well as other network controls, to only allow legitimate BITS traffic.",
    },
    Technique {
        id: "T1530",
        name: "Data from Cloud Storage",
        mitigation: "Cloud service providers support IP-based restrictions when accessing cloud resources. Consider using IP allowlisting along with user account management to ensure that data access is restricted not only to valid users but only from expected IP ranges to mitigate the use of stolen credentials to access data.",
    },
    Technique {
        id: "T1602",
        name: "Data from Configuration Repository",
        mitigation: "Apply extended ACLs to block unauthorized protocols outside the trusted network.",
    },
    Technique {
        id: "T1602.001",
        name: "SNMP (MIB Dump)",
        mitigation: "Apply extended ACLs to block unauthorized protocols outside the trusted network.",
    },
    Technique {
        id: "T1602.002",
        name: "Network Device Configuration Dump",
        mitigation: "Apply extended ACLs to block unauthorized protocols outside the trusted network.",
    },
    Technique {
        id: "T1499",
        name: "Endpoint Denial of Service",
        mitigation: "Leverage services provided by Content Delivery Networks (CDN) or providers specializing in DoS mitigations to filter traffic upstream from services.1 Filter boundary traffic by blocking source addresses sourcing the attack, blocking ports that are being targeted, or blocking protocols being used for transport. To defend against SYN floods, enable SYN Cookies.",
    },
    Technique {
        id: "T1499.001",
        name: "OS Exhaustion Flood",
        mitigation: "Leverage services provided by Content Delivery Networks (CDN) or providers specializing in DoS mitigations to filter traffic upstream from services.1 Filter boundary traffic by blocking source addresses sourcing the attack, blocking ports that are being targeted, or blocking protocols being used for transport. To defend against SYN floods, enable SYN Cookies.",
    },
    Technique {
        id: "T1499.002",
        name: "Service Exhaustion Flood",
        mitigation: "Leverage services provided by Content Delivery Networks (CDN) or providers specializing in DoS mitigations to filter traffic upstream from services.1 Filter boundary traffic by blocking source addresses sourcing the attack, blocking ports that are being targeted, or blocking protocols being used for transport.",
    },
    Technique {
        id: "T1499.003",
        name: "Application Exhaustion Flood",
        mitigation: "Leverage services provided by Content Delivery Networks (CDN) or providers specializing in DoS mitigations to filter traffic upstream from services.1 Filter boundary traffic by blocking source addresses sourcing the attack, blocking ports that are being targeted, or blocking protocols being used for transport.",
    },
    Technique {
        id: "T1499.004",
        name: "Application or System Exploitation",
        mitigation: "Leverage services provided by Content Delivery Networks (CDN) or providers specializing in DoS mitigations to filter traffic upstream from services.1 Filter boundary traffic by blocking source addresses sourcing the attack, blocking ports that are being targeted, or blocking protocols being used for transport.",
    },
    Technique {
        id: "T1048",
        name: "Exfiltration Over Alternative Protocol",
        mitigation: "Enforce proxies and use dedicated servers for services such as DNS and only allow those systems to communicate over respective ports/protocols, instead of all systems within a network. Cloud service providers support IP-based restrictions when accessing cloud resources. Consider using IP allowlisting along with user account management to ensure that data access is restricted not only to valid users but only from expected IP ranges to mitigate the use of stolen credentials to access data.",
    },
    Technique {
        id: "T1048.001",
        name: "Exfiltration Over Symmetric Encrypted Non-C2 Protocol",
        mitigation: "Enforce proxies and use dedicated servers for services such as DNS and only allow those systems to communicate over respective ports/protocols, instead of all systems within a network.",
    },
    Technique {
        id: "T1048.002",
        name: "Exfiltration Over Asymmetric Encrypted Non-C2 Protocol",
        mitigation: "Enforce proxies and use dedicated servers for services such as DNS and only allow those systems to communicate over respective ports/protocols, instead of all systems within a network.",
    },
    Technique {
        id: "T1048.003",
        name: "Exfiltration Over Unencrypted Non-C2 Protocol",
        mitigation: "Enforce proxies and use dedicated servers for services such as DNS and only allow those systems to communicate over respective ports/protocols, instead of all systems within a network.",
    },
    Technique {
        id: "T1190",
        name: "Exploit Public-Facing Application",
        mitigation: "Restrict outbound network traffic from public-facing servers to prevent unauthorized connections from initiating communications with attacker-controlled infrastructure. While this may not prevent the initial exploitation, it limits the attacker’s ability to verify and control the compromised server post-exploit, reducing the overall impact of the attack.",
    },
    Technique {
        id: "T1187",
        name: "Forced Authentication",
        mitigation: "Block SMB traffic from exiting an enterprise network with egress filtering or by blocking TCP ports 139, 445 and UDP port 137. Filter or block WebDAV protocol traffic from exiting the network. If access to external resources over SMB and WebDAV is necessary, then traffic should be tightly limited with allowlisting.",
    },
    Technique {
        id: "T1105",
        name: "Ingress Tool Transfer",
        mitigation: "Use network filtering to block outbound traffic from compromised systems to unapproved external destinations. Restricting access to known, trusted IP addresses and protocols can prevent attackers from downloading malicious tools or payloads onto compromised servers after gaining initial access.",
    },
    Technique {
        id: "T1570",
        name: "Lateral Tool Transfer",
        mitigation: "Consider using the host firewall to restrict file sharing communications such as SMB.",
    },
    Technique {
        id: "T1599",
        name: "Network Boundary Bridging",
        mitigation: "Upon identifying a compromised network device being used to bridge a network boundary, block the malicious packets using an unaffected network device in path, such as a firewall or a router that has not been compromised. Continue to monitor for additional activity and to ensure that the blocks are indeed effective.",
    },
    Technique {
        id: "T1599.001",
        name: "Network Address Translation Traversal",
        mitigation: "Block Traffic Upon identifying a compromised network device being used to bridge a network boundary, block the malicious packets using an unaffected network device in path, such as a firewall or a router that has not been compromised. Continue to monitor for additional activity and to ensure that the blocks are indeed effective.",
    },
    Technique {
        id: "T1498",
        name: "Network Denial of Service",
        mitigation: "When flood volumes exceed the capacity of the network connection being targeted, it is typically necessary to intercept the incoming traffic upstream to filter out the attack traffic from the legitimate traffic. Such defenses can be provided by the hosting Internet Service Provider (ISP) or by a 3rd party such as a Content Delivery Network (CDN) or providers specializing in DoS mitigations.",
    },
    Technique {
        id: "T1498.001",
        name: "Direct Network Flood",
        mitigation: "When flood volumes exceed the capacity of the network connection being targeted, it is typically necessary to intercept the incoming traffic upstream to filter out the attack traffic from the legitimate traffic. Such defenses can be provided by the hosting Internet Service Provider (ISP) or by a 3rd party such as a Content Delivery Network (CDN) or providers specializing in DoS mitigations.",
    },
    Technique {
        id: "T1498.002",
        name: "Reflection Amplification",
        mitigation: "When flood volumes exceed the capacity of the network connection being targeted, it is typically necessary to intercept the incoming traffic upstream to filter out the attack traffic from the legitimate traffic. Such defenses can be provided by the hosting Internet Service Provider (ISP) or by a 3rd party such as a Content Delivery Network (CDN) or providers specializing in DoS mitigations.",
    },
    Technique {
        id: "T1095",
        name: "Non-Application Layer Protocol",
        mitigation: "Filter network traffic to prevent use of protocols across the network boundary that are unnecessary. If VMCI is not required in ESXi environments, consider restricting guest virtual machines from accessing VMCI services.",
    },
    Technique {
        id: "T1572",
        name: "Protocol Tunneling",
        mitigation: "Consider filtering network traffic to untrusted or known bad domains and resources.",
    },
    Technique {
        id: "T1090",
        name: "Proxy",
        mitigation: "Traffic to known anonymity networks and C2 infrastructure can be blocked through the use of network allow and block lists. It should be noted that this kind of blocking may be circumvented by other techniques like Domain Fronting.",
    },
    Technique {
        id: "T1090.003",
        name: "Multi-hop Proxy",
        mitigation: "Traffic to known anonymity networks and C2 infrastructure can be blocked through the use of network allow and block lists. It should be noted that this kind of blocking may be circumvented by other techniques like Domain Fronting.",
    },
    Technique {
        id: "T1219",
        name: "Remote Access Tools",
        mitigation: "Properly configure firewalls, application firewalls, and proxies to limit outgoing traffic to sites and services used by remote access software.",
    },
    Technique {
        id: "T1219.002",
        name: "Remote Desktop Software",
        mitigation: "Properly configure firewalls, application firewalls, and proxies to limit outgoing traffic to sites and services used by remote access software.",
    },
    Technique {
        id: "T1021",
        name: "Remote Services",
        mitigation: "-",
    },
    Technique {
        id: "T1021.002",
        name: "SMB/Windows Admin Shares",
        mitigation: "Consider using the host firewall to restrict file sharing communications such as SMB.",
    },
    Technique {
        id: "T1021.005",
        name: "VNC",
        mitigation: "VNC defaults to TCP ports 5900 for the server, 5800 for browser access, and 5500 for a viewer in listening mode. Filtering or blocking these ports will inhibit VNC traffic utilizing default ports.",
    },
    Technique {
        id: "T1218",
        name: "System Binary Proxy Execution",
        mitigation: "Use network appliances to filter ingress or egress traffic and perform protocol-based filtering. Configure software on endpoints to filter network traffic.",
    },
    Technique {
        id: "T1218.012",
        name: "Verclsid",
        mitigation: "Consider modifying host firewall rules to prevent egress traffic from verclsid.exe.",
    },
    Technique {
        id: "T1205",
        name: "Traffic Signaling",
        mitigation: "Mitigation of some variants of this technique could be achieved through the use of stateful firewalls, depending upon how it is implemented.",
    },
    Technique {
        id: "T1205.001",
        name: "Port Knocking",
        mitigation: "Mitigation of some variants of this technique could be achieved through the use of stateful firewalls, depending upon how it is implemented.",
    },
    Technique {
        id: "T1205.002",
        name: "Socket Filters",
        mitigation: "Mitigation of some variants of this technique could be achieved through the use of stateful firewalls, depending upon how it is implemented.",
    },
    Technique {
        id: "T1537",
        name: "Transfer Data to Cloud Account",
        mitigation: "Implement network-based filtering restrictions to prohibit data transfers to untrusted VPCs.",
    },
    Technique {
        id: "T1552",
        name: "Unsecured Credentials",
        mitigation: "Limit access to the Instance Metadata API. A properly configured Web Application Firewall (WAF) may help prevent external adversaries from exploiting Server-side Request Forgery (SSRF) attacks that allow access to the Cloud Instance Metadata API.",
    },
    Technique {
        id: "T1552.005",
        name: "Cloud Instance Metadata API",
        mitigation: "Limit access to the Instance Metadata API. A properly configured Web Application Firewall (WAF) may help prevent external adversaries from exploiting Server-side Request Forgery (SSRF) attacks that allow access to the Cloud Instance Metadata API.",
    },
];
