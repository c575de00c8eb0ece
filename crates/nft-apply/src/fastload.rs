//! Loading big transactions over netlink: nft parses only the table part (small), the kernel
//! receives the set elements from Rampart directly, all in ONE batch, so the apply stays one
//! atomic transaction (the old table is replaced by the new one with all its elements, or
//! nothing changes).
//!
//! How: the transaction without its `add element` statements is loaded by nft into a scratch
//! network namespace (a thread that `unshare`s its own), dumped back over netlink (tables,
//! objects, chains, sets with their small element lists, rules) and turned into the messages
//! that create those objects again ([`crate::nfnl::parse_dumped`]). That replay is verified
//! in the same scratch namespace: loaded there over netlink, the table must list exactly as
//! nft's own load did; otherwise (or when the scratch namespace holds anything but the one
//! table) the caller keeps nft's JSON/text path. The big element lists are encoded by
//! [`crate::nfnl::encode_elements`] (interval sets: start/end elements as nft sends them).

use std::path::Path;
use std::process::Command;

use crate::json::split_elements;
use crate::nfnl::{self, msg, Batch, Dumped, Element, SetInfo};
use crate::nlsock::NlSocket;
use crate::runner::{write_atomic, Nft};
use crate::ApplyError;

/// Why: below this many elements nft's own parser costs tens of milliseconds, less than the
/// scratch namespace round trip this path needs.
pub const NETLINK_MIN_ELEMENTS: usize = 100_000;

/// A transaction ready to be sent as one netlink batch.
#[derive(Debug)]
pub struct Prepared {
    table: String,
    family: u8,
    /// Table, objects, chains, sets and their small element lists, in creation order.
    head: Vec<Dumped>,
    /// Rules, in order.
    rules: Vec<Dumped>,
    /// Big sets' elements, encoded.
    elements: Vec<(String, Vec<Element>)>,
    /// Number of elements as written by the emitter.
    pub source_elements: usize,
}

impl Prepared {
    /// The batch: create-if-absent and delete the table (as the text transaction does), then
    /// re-create it, its objects, chains, sets, elements and rules.
    fn batch(&self, first_seq: u32, with_elements: bool) -> Batch {
        let mut b = Batch::new(first_seq);
        b.ensure_table(self.family, &self.table);
        b.delete_table(self.family, &self.table);
        for d in &self.head {
            b.recreate(d);
        }
        if with_elements {
            for (set, els) in &self.elements {
                b.add_elements(self.family, &self.table, set, els);
            }
        }
        for r in &self.rules {
            b.recreate(r);
        }
        b
    }

    /// Messages in the full batch (for logs).
    pub fn element_count(&self) -> usize {
        self.elements.iter().map(|(_, e)| e.len()).sum()
    }
}

fn send(sock: &mut NlSocket, p: &Prepared, with_elements: bool) -> Result<(), ApplyError> {
    let first = sock.next_free_seq();
    let b = p.batch(first, with_elements);
    sock.consume_seq(b.len() as u32 + 2);
    let (bytes, acked, what) = b
        .finish()
        .map_err(|e| ApplyError::Netlink(format!("batch: {e}")))?;
    sock.transact(&bytes, acked, first, &what)
}

/// A dumped table: family, objects before the rules, rules.
type DumpedTable = (u8, Vec<Dumped>, Vec<Dumped>);

/// Dump everything of `table` from the socket's namespace; `None` when the namespace holds
/// something this path does not replay (another table, a flowtable).
fn dump_table(sock: &mut NlSocket, table: &str) -> Result<Option<DumpedTable>, ApplyError> {
    let tables = sock.dump(msg::GETTABLE, table, None)?;
    let [t] = tables.as_slice() else {
        return Ok(None);
    };
    if t.table != table || t.family != nfnl::NFPROTO_INET {
        return Ok(None);
    }
    if !sock.dump(msg::GETFLOWTABLE, table, None)?.is_empty() {
        return Ok(None);
    }
    let mut head = vec![t.clone()];
    head.extend(sock.dump(msg::GETOBJ, table, None)?);
    head.extend(sock.dump(msg::GETCHAIN, table, None)?);
    let sets = sock.dump(msg::GETSET, table, None)?;
    let mut elems = Vec::new();
    for s in &sets {
        let info = SetInfo::from_dumped(s)
            .ok_or_else(|| ApplyError::Netlink("dumped set without name or key".into()))?;
        // Empty element lists (a dump of an empty set) are not sent back.
        elems.extend(
            sock.dump(msg::GETSETELEM, table, Some(&info.name))?
                .into_iter()
                .filter(nfnl::Dumped::has_elements),
        );
    }
    head.extend(sets);
    head.extend(elems);
    let rules = sock.dump(msg::GETRULE, table, None)?;
    if head
        .iter()
        .chain(&rules)
        .any(|d| d.table != table || d.family != nfnl::NFPROTO_INET)
    {
        return Ok(None);
    }
    Ok(Some((nfnl::NFPROTO_INET, head, rules)))
}

/// Run `f` on a thread in a fresh, empty network namespace (gone when the thread ends and its
/// sockets are closed). Programs it starts inherit that namespace.
fn in_scratch_netns<T: Send>(
    f: impl FnOnce() -> Result<T, ApplyError> + Send,
) -> Result<T, ApplyError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare affects only the calling thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(ApplyError::Netlink(format!(
                    "unshare(CLONE_NEWNET): {}",
                    std::io::Error::last_os_error()
                )));
            }
            f()
        })
        .join()
        .map_err(|_| ApplyError::Netlink("scratch namespace thread panicked".into()))?
    })
}

fn nft_out(program: &Path, args: &[&str]) -> Result<Option<String>, ApplyError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ApplyError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A listing without the remaining lifetimes of timed elements (`expires 9m59s980ms`), which
/// differ between two loads by the time between them.
fn without_expiry(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    let mut words = listing.split(' ').peekable();
    let mut first = true;
    while let Some(w) = words.next() {
        if w == "expires" && words.peek().is_some() {
            words.next();
            // Keep what followed the value on its line (`,` or ` }`).
            continue;
        }
        if !first {
            out.push(' ');
        }
        out.push_str(w);
        first = false;
    }
    out
}

/// Why not prepared, for the log.
#[derive(Debug)]
pub enum Skipped {
    /// Fewer elements than the threshold.
    Small,
    /// The reason this transaction keeps nft's path.
    Fallback(String),
}

/// Prepare transaction `text` (table `table`) for a netlink load when it has at least
/// `min_elements` elements in `add element` statements. `work`: a directory for a scratch file.
pub fn prepare(
    nft: &Nft,
    text: &str,
    table: &str,
    min_elements: usize,
    work: &Path,
) -> Result<Result<Prepared, Skipped>, ApplyError> {
    let (head_text, big) = split_elements(text, table);
    let count: usize = big.iter().map(|(_, v)| v.len()).sum();
    if count < min_elements {
        return Ok(Err(Skipped::Small));
    }
    let path = work.join(format!("netlink-head-{}.nft", std::process::id()));
    write_atomic(&path, &head_text)?;
    let program = nft.program.clone();
    let scratch = in_scratch_netns(|| {
        let p = path.to_string_lossy().into_owned();
        if nft_out(&program, &["-f", &p])?.is_none() {
            return Ok(Err(Skipped::Fallback(
                "the table part does not load in a scratch namespace".into(),
            )));
        }
        let Some(by_nft) = nft_out(&program, &["list", "table", "inet", table])? else {
            return Ok(Err(Skipped::Fallback(
                "cannot list the scratch table".into(),
            )));
        };
        let mut sock = NlSocket::open()?;
        let Some((family, head, rules)) = dump_table(&mut sock, table)? else {
            return Ok(Err(Skipped::Fallback(
                "the transaction holds more than one inet table".into(),
            )));
        };
        let p = Prepared {
            table: table.to_string(),
            family,
            head,
            rules,
            elements: Vec::new(),
            source_elements: count,
        };
        // The replay must rebuild exactly what nft built.
        if let Err(e) = send(&mut sock, &p, false) {
            return Ok(Err(Skipped::Fallback(format!(
                "the kernel refused the replayed table part: {e}"
            ))));
        }
        let again = nft_out(&program, &["list", "table", "inet", table])?;
        if again.as_deref().map(without_expiry) != Some(without_expiry(&by_nft)) {
            return Ok(Err(Skipped::Fallback(
                "the replayed table part lists differently".into(),
            )));
        }
        Ok(Ok(p))
    });
    let _ = std::fs::remove_file(&path);
    let mut p = match scratch? {
        Ok(p) => p,
        Err(s) => return Ok(Err(s)),
    };
    let sets: Vec<SetInfo> = p.head.iter().filter_map(SetInfo::from_dumped).collect();
    for (name, elems) in &big {
        let Some(info) = sets.iter().find(|s| s.name == *name) else {
            return Ok(Err(Skipped::Fallback(format!(
                "no set {name} in the table"
            ))));
        };
        match nfnl::encode_elements(info, elems) {
            Ok(e) => p.elements.push((name.to_string(), e)),
            Err(e) => return Ok(Err(Skipped::Fallback(e.0))),
        }
    }
    Ok(Ok(p))
}

/// Load a prepared transaction into network namespace `netns` (`None`: the caller's) as one
/// batch. On error the kernel has applied nothing.
pub fn load(p: &Prepared, netns: Option<&str>) -> Result<(), ApplyError> {
    let mut sock = NlSocket::open_in(netns)?;
    send(&mut sock, p, true)
}

/// Why: sets with more elements than this are left out of the snapshot's scratch check (their
/// elements are replayed verbatim from the dump; the terse listings compared omit them anyway).
const SNAPSHOT_CHECK_MAX_SET_ELEMENTS: usize = 4096;

fn element_count(d: &Dumped) -> usize {
    nfnl::attrs(&d.attrs)
        .and_then(|a| {
            a.iter()
                .find(|x| x.ty == 3) // NFTA_SET_ELEM_LIST_ELEMENTS
                .and_then(|x| nfnl::attrs(x.value))
                .map(|l| l.len())
        })
        .unwrap_or(0)
}

fn setelem_set(d: &Dumped) -> Option<String> {
    let a = nfnl::attrs(&d.attrs)?;
    let v = a.iter().find(|x| x.ty == 2)?.value; // NFTA_SET_ELEM_LIST_SET
    let v = v.split(|b| *b == 0).next().unwrap_or(v);
    std::str::from_utf8(v).ok().map(str::to_string)
}

/// The same objects in any order, set elements compared one by one (a hash set dumps its
/// elements in the order of its randomly seeded buckets, so message boundaries differ).
fn same_objects(a: &[Dumped], b: &[Dumped]) -> bool {
    fn flat(v: &[Dumped]) -> Option<Vec<(u16, String, Vec<u8>)>> {
        let mut out = Vec::new();
        for d in v {
            if d.ty != msg::NEWSETELEM {
                out.push((d.ty, String::new(), d.attrs.clone()));
                continue;
            }
            let set = setelem_set(d)?;
            let top = nfnl::attrs(&d.attrs)?;
            let list = top.iter().find(|x| x.ty == 3)?; // NFTA_SET_ELEM_LIST_ELEMENTS
            for e in nfnl::attrs(list.value)? {
                out.push((d.ty, set.clone(), e.value.to_vec()));
            }
        }
        out.sort();
        Some(out)
    }
    match (flat(a), flat(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The restore batch for the live table `table` in the runner's namespace, taken over netlink:
/// the table's objects, chains, sets with all their elements and rules (counter values
/// included), replayed as one batch that first deletes whatever table is there. Saves the
/// text listing and its `nft -c` (tens of seconds for a million elements; the kernel's set
/// dump itself stays). `None` when the table is absent, holds fewer than `min_elements` set
/// elements (the text snapshot is cheap then), or its replay does not rebuild it: checked by
/// loading the replay (without the elements of big sets) into a scratch namespace and
/// comparing `nft -s -t list table` (stateless, terse) with the live table's.
pub fn snapshot_live(
    nft: &Nft,
    table: &str,
    min_elements: usize,
) -> Result<Option<Vec<u8>>, ApplyError> {
    let mut sock = NlSocket::open_in(nft.netns.as_deref())?;
    let tables = sock.dump(msg::GETTABLE, table, None)?;
    let Some(t) = tables
        .iter()
        .find(|t| t.table == table && t.family == nfnl::NFPROTO_INET)
    else {
        return Ok(None);
    };
    // A table owned by a socket (`flags owner`) cannot be re-created by another: text path.
    if nfnl::table_flags(t).is_some_and(|f| f != 0) {
        return Ok(None);
    }
    let ours = |v: Vec<Dumped>| -> Vec<Dumped> {
        v.into_iter()
            .filter(|d| d.table == table && d.family == nfnl::NFPROTO_INET)
            .collect()
    };
    if !ours(sock.dump(msg::GETFLOWTABLE, table, None)?).is_empty() {
        return Ok(None);
    }
    let mut head = vec![t.clone()];
    head.extend(ours(sock.dump(msg::GETOBJ, table, None)?));
    head.extend(ours(sock.dump(msg::GETCHAIN, table, None)?));
    let sets = ours(sock.dump(msg::GETSET, table, None)?);
    let mut elems = Vec::new();
    for s in &sets {
        let info = SetInfo::from_dumped(s)
            .ok_or_else(|| ApplyError::Netlink("dumped set without name or key".into()))?;
        elems.extend(
            ours(sock.dump(msg::GETSETELEM, table, Some(&info.name))?)
                .into_iter()
                .filter(Dumped::has_elements),
        );
    }
    let total: usize = elems.iter().map(element_count).sum();
    if total < min_elements {
        return Ok(None);
    }
    let rules = ours(sock.dump(msg::GETRULE, table, None)?);
    let mut per_set: std::collections::HashMap<String, usize> = Default::default();
    for e in &elems {
        *per_set
            .entry(setelem_set(e).unwrap_or_default())
            .or_default() += element_count(e);
    }
    head.extend(sets);
    let small: Vec<Dumped> = elems
        .iter()
        .filter(|e| {
            per_set
                .get(&setelem_set(e).unwrap_or_default())
                .is_none_or(|n| *n <= SNAPSHOT_CHECK_MAX_SET_ELEMENTS)
        })
        .cloned()
        .collect();
    let check = Prepared {
        table: table.to_string(),
        family: nfnl::NFPROTO_INET,
        head: head.iter().cloned().chain(small).collect(),
        rules: rules.clone(),
        elements: Vec::new(),
        source_elements: 0,
    };
    // Replayed into a scratch namespace, the table part must dump back as the same objects
    // (the attributes a creating message carries; big sets' elements left out).
    let program_free_check = check.head.clone();
    let check_rules = check.rules.clone();
    let faithful = in_scratch_netns(|| {
        let mut s = NlSocket::open()?;
        if send(&mut s, &check, false).is_err() {
            return Ok(false);
        }
        let Some((_, head, rules)) = dump_table(&mut s, table)? else {
            return Ok(false);
        };
        Ok(same_objects(&head, &program_free_check) && rules == check_rules)
    })?;
    if !faithful {
        return Ok(None);
    }
    let full = Prepared {
        head: head.into_iter().chain(elems).collect(),
        ..check
    };
    let (bytes, acked, _) = full
        .batch(1, false)
        .finish()
        .map_err(|e| ApplyError::Netlink(format!("batch: {e}")))?;
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&acked.to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(Some(out))
}

/// Load a batch saved by [`snapshot_live`] into `netns` (one transaction: all or nothing).
pub fn restore_batch(saved: &[u8], netns: Option<&str>) -> Result<(), ApplyError> {
    let bad = || ApplyError::CorruptState {
        path: "previous.batch".into(),
        reason: "not a saved netlink batch".into(),
    };
    let word = |at: usize| -> Result<u32, ApplyError> {
        let b: [u8; 4] = saved
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        Ok(u32::from_le_bytes(b))
    };
    let (first, acked) = (word(0)?, word(4)?);
    let bytes = &saved[8..];
    let n = nfnl::messages(bytes).ok_or_else(bad)?.len();
    let what: Vec<String> = (0..n).map(|i| format!("saved message {i}")).collect();
    let mut sock = NlSocket::open_in(netns)?;
    sock.transact(bytes, acked, first, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elems(set: &str, keys: &[&[u8]]) -> Dumped {
        // NFTA_SET_ELEM_LIST_SET, then LIST_ELEMENTS with one LIST_ELEM per key.
        let mut a = Vec::new();
        let name: Vec<u8> = set.bytes().chain([0]).collect();
        let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(4) * 4, 0);
        a.extend(((4 + name.len()) as u16).to_ne_bytes());
        a.extend(2u16.to_ne_bytes());
        a.extend(&name);
        pad(&mut a);
        let mut list = Vec::new();
        for k in keys {
            list.extend(((4 + k.len()) as u16).to_ne_bytes());
            list.extend((1u16 | 0x8000).to_ne_bytes());
            list.extend(*k);
            pad(&mut list);
        }
        a.extend(((4 + list.len()) as u16).to_ne_bytes());
        a.extend((3u16 | 0x8000).to_ne_bytes());
        a.extend(list);
        Dumped {
            ty: msg::NEWSETELEM,
            family: nfnl::NFPROTO_INET,
            table: "t".into(),
            attrs: a,
        }
    }

    #[test]
    fn objects_compare_element_by_element_whatever_the_message_split() {
        let x = [elems("s", &[&[1, 2, 3, 4], &[5, 6, 7, 8]])];
        let y = [elems("s", &[&[5, 6, 7, 8]]), elems("s", &[&[1, 2, 3, 4]])];
        assert!(same_objects(&x, &y));
        let z = [elems("s", &[&[5, 6, 7, 9]]), elems("s", &[&[1, 2, 3, 4]])];
        assert!(!same_objects(&x, &z));
        let other_set = [elems("r", &[&[1, 2, 3, 4], &[5, 6, 7, 8]])];
        assert!(!same_objects(&x, &other_set));
    }

    #[test]
    fn expiry_is_ignored_and_nothing_else() {
        assert_eq!(
            without_expiry("elements = { 192.0.2.9 timeout 10m expires 9m59s980ms }"),
            without_expiry("elements = { 192.0.2.9 timeout 10m expires 9m59s996ms }")
        );
        assert_ne!(
            without_expiry("elements = { 192.0.2.9 timeout 10m expires 9m }"),
            without_expiry("elements = { 192.0.2.8 timeout 10m expires 9m }")
        );
        assert_eq!(without_expiry("a b\n\tc"), "a b\n\tc");
    }
}
