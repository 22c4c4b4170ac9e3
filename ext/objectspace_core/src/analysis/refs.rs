//! Each object's `references` and the ROOT records, as read from a dump, before
//! [`super::paths::Graph::build`] resolves the addresses to object indices.

use memchr::memchr;

use crate::scan::{parse_hex, unescape_lossy};

/// ROOT categories kept as separate sources (Ruby has about a dozen).
pub const MAX_ROOTS: u32 = 4096;

/// References as read, before addresses are resolved: 8 bytes a reference
/// and 4 an object.
#[derive(Debug, Default)]
pub struct RawRefs {
    /// Per object, the end of its references in `targets`.
    pub ends: Vec<u32>,
    pub targets: Vec<u64>,
    /// ROOT categories in dump order, with the addresses they hold.
    pub roots: Vec<(String, Vec<u64>)>,
    /// Set when the dump has more references than a `u32` counts; later
    /// objects then keep none (paths through them become "outside" paths).
    overflow: bool,
}

/// References kept in all, at most (their ends are `u32`).
const MAX_TARGETS: usize = u32::MAX as usize - 1;

impl RawRefs {
    /// A ROOT record: its category and references.
    pub fn push_root(&mut self, name: Option<&[u8]>, refs: Option<&[u8]>) {
        let name = match name {
            Some(n) => unescape_lossy(n, n.contains(&b'\\')).0,
            None => "root".to_string(),
        };
        let mut targets = Vec::new();
        parse_refs(refs.unwrap_or(&[]), |a| targets.push(a));
        self.add_root(name, targets);
    }

    /// dump_all writes a record each time the category changes; merge repeats.
    fn add_root(&mut self, name: String, targets: Vec<u64>) {
        if let Some((_, t)) = self.roots.iter_mut().find(|(n, _)| *n == name) {
            t.extend(targets);
        } else if self.roots.len() < MAX_ROOTS as usize {
            self.roots.push((name, targets));
        }
    }

    /// The references of the object just added to the heap.
    #[inline]
    pub fn push_object(&mut self, refs: Option<&[u8]>) {
        if let Some(raw) = refs {
            if !self.overflow {
                parse_refs(raw, |a| self.targets.push(a));
                if self.targets.len() > MAX_TARGETS {
                    self.targets.truncate(MAX_TARGETS);
                    self.overflow = true;
                }
            }
        }
        self.ends.push(self.targets.len() as u32);
    }

    /// Append the references of the part of the dump read after this one:
    /// the same as reading both in one go.
    pub fn absorb(&mut self, part: RawRefs) {
        let base = self.targets.len();
        let room = MAX_TARGETS - base;
        if part.targets.len() > room {
            self.overflow = true;
        }
        self.ends.reserve(part.ends.len());
        self.ends.extend(
            part.ends
                .iter()
                .map(|&e| (base + (e as usize).min(room)) as u32),
        );
        let keep = part.targets.len().min(room);
        self.targets.extend_from_slice(&part.targets[..keep]);
        self.overflow |= part.overflow;
        for (name, targets) in part.roots {
            self.add_root(name, targets);
        }
    }
}

/// Call `f` with each quoted hex address of a raw `references` body.
#[inline]
pub fn parse_refs(raw: &[u8], mut f: impl FnMut(u64)) {
    let mut i = 0;
    while let Some(q) = memchr(b'"', &raw[i..]) {
        let start = i + q + 1;
        let Some(len) = memchr(b'"', &raw[start..]) else {
            break;
        };
        if let Some(a) = parse_hex(&raw[start..start + len]) {
            f(a);
        }
        i = start + len + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_from_the_raw_body() {
        let mut v = Vec::new();
        parse_refs(br#""0x10", "0x7f00000000a8","zz", "0x2""#, |a| v.push(a));
        assert_eq!(v, vec![0x10, 0x7f00000000a8, 0x2]);
        v.clear();
        parse_refs(b"", |a| v.push(a));
        assert!(v.is_empty());
    }

    #[test]
    fn parts_absorbed_in_order_are_the_whole_read_in_one_go() {
        let objects: [&[u8]; 4] = [br#""0x10","0x20""#, b"", br#""0x30""#, br#""0x40","0x10""#];
        let roots: [(&[u8], &[u8]); 3] = [
            (b"vm", br#""0x10""#),
            (b"global_list", br#""0x20""#),
            (b"vm", br#""0x30""#),
        ];
        let mut whole = RawRefs::default();
        for o in objects {
            whole.push_object(Some(o));
        }
        for (n, r) in roots {
            whole.push_root(Some(n), Some(r));
        }
        let mut first = RawRefs::default();
        let mut second = RawRefs::default();
        for o in &objects[..2] {
            first.push_object(Some(o));
        }
        for o in &objects[2..] {
            second.push_object(Some(o));
        }
        first.push_root(Some(roots[0].0), Some(roots[0].1));
        second.push_root(Some(roots[1].0), Some(roots[1].1));
        second.push_root(Some(roots[2].0), Some(roots[2].1));
        first.absorb(second);
        assert_eq!(first.ends, whole.ends);
        assert_eq!(first.targets, whole.targets);
        assert_eq!(first.roots, whole.roots);
    }
}
