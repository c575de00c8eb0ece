//! Which interfaces hand IPv6 SYNs to the kernel's SYN proxy with an unverified checksum.
//!
//! nft's `synproxy` checks a SYN whose checksum nobody verified yet (`CHECKSUM_NONE`) with the
//! IPv4 pseudo-header also for IPv6, so it drops every such IPv6 SYN unanswered (docs/nft.md).
//! A device verifies receive checksums itself (`rx-checksumming`) or GRO does it for TCP; an
//! interface with both off delivers exactly those SYNs. `rampart apply` warns about them when
//! the policy proxies SYNs. Read with the legacy `SIOCETHTOOL` get requests, in the caller's
//! network namespace.

use std::ffi::CStr;

/// `SIOCETHTOOL`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GRXCSUM`: is receive checksum offload on.
const ETHTOOL_GRXCSUM: u32 = 0x14;
/// `ETHTOOL_GGRO`: is generic receive offload on.
const ETHTOOL_GGRO: u32 = 0x2b;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Interfaces of this network namespace (loopback aside) whose receive checksum offload and
/// GRO are both off, in name order. An interface the query fails on (no ethtool support, gone
/// meanwhile) is left out: nothing is known about it.
pub fn ipv6_synproxy_blind_interfaces() -> Vec<String> {
    let mut out: Vec<String> = interface_names()
        .into_iter()
        .filter(|name| name != "lo")
        .filter(|name| {
            matches!(
                (
                    ethtool_get(name, ETHTOOL_GRXCSUM),
                    ethtool_get(name, ETHTOOL_GGRO)
                ),
                (Some(false), Some(false))
            )
        })
        .collect();
    out.sort();
    out
}

/// The names `if_nameindex(3)` lists (this namespace's interfaces).
fn interface_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns a heap array terminated by an entry with index 0 and a null
    // name, or null on failure; it is read only up to that terminator and freed once below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    names
}

/// One ethtool boolean get request (`cmd`) on interface `name`.
fn ethtool_get(name: &str, cmd: u32) -> Option<bool> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    let mut value = EthtoolValue { cmd, data: 0 };
    // SAFETY: ifreq is plain data; all-zero is a valid value to fill in.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = std::ptr::addr_of_mut!(value).cast();
    // SAFETY: `fd` is an open socket, `req` a live ifreq naming a NUL-terminated interface
    // (the name is shorter than IFNAMSIZ and the rest is zero) whose data pointer points at
    // `value`, an ethtool_value the kernel reads `cmd` from and writes `data` to; both outlive
    // the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, std::ptr::addr_of_mut!(req)) };
    // SAFETY: closing the descriptor opened above, once.
    unsafe { libc::close(fd) };
    (rc == 0).then_some(value.data != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_by_name_and_never_reported() {
        assert!(interface_names().iter().any(|n| n == "lo"));
        assert!(!ipv6_synproxy_blind_interfaces().contains(&"lo".to_string()));
        assert_eq!(ethtool_get("no-such-interface0", ETHTOOL_GRXCSUM), None);
        assert_eq!(ethtool_get(&"x".repeat(64), ETHTOOL_GRXCSUM), None);
    }
}
