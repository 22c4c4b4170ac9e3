//! What happens to each record of a block: annotation from the site table
//! (which also leaves out what a retained dump does not keep), redaction,
//! and counting into the summary.

use crate::annotate::Annotator;
use crate::redact::Redactor;

use super::summary::{Summary, TypeFields};

/// The records of a block, as they are to be stored.
pub(super) struct Records {
    fields: TypeFields,
    redactor: Option<Redactor>,
    annotator: Option<Annotator>,
    /// The records are rewritten (annotated or redacted) into `out`; else
    /// the block is stored as read.
    rewrite: bool,
    out: Vec<u8>,
}

/// A block's records as stored.
pub(super) struct Filtered<'a> {
    pub bytes: &'a [u8],
    /// Where the first record ends in `bytes` (0 if it was left out).
    pub first_end: usize,
}

impl Records {
    /// `redact`: drop string values; `annotator`: add allocation sites (and
    /// leave out what a retained dump does not keep); `capacity`: the size
    /// of the blocks to expect.
    pub(super) fn new(redact: bool, annotator: Option<Annotator>, capacity: usize) -> Self {
        let rewrite = redact || annotator.is_some();
        Records {
            fields: TypeFields::new(),
            redactor: redact.then(Redactor::default),
            annotator,
            rewrite,
            out: Vec::with_capacity(capacity),
        }
    }

    /// Pass each line of `block` through, counting what is kept.
    pub(super) fn filter<'a>(&'a mut self, block: &'a [u8], summary: &mut Summary) -> Filtered<'a> {
        self.out.clear();
        let mut first_end = 0;
        for (i, line) in lines(block).enumerate() {
            let mut values = 0;
            let redactor = self.redactor.as_ref();
            let mut copy = |l: &[u8], o: &mut Vec<u8>| match redactor {
                Some(r) => values = r.redact_line(l, o),
                None => o.extend_from_slice(l),
            };
            let at = self.out.len();
            let kept = match self.annotator.as_mut() {
                Some(a) => a.process(line, &mut self.out, copy),
                None if self.rewrite => {
                    copy(line, &mut self.out);
                    true
                }
                None => true,
            };
            if !kept {
                summary.left_out += 1;
                continue;
            }
            if i == 0 {
                first_end = if self.rewrite {
                    self.out.len()
                } else {
                    line.len()
                };
            }
            summary.redacted_values += values as u64;
            let stored = if self.rewrite { &self.out[at..] } else { line };
            summary.count(&self.fields, stored);
        }
        Filtered {
            bytes: if self.rewrite { &self.out } else { block },
            first_end,
        }
    }
}

/// The lines of `block`, each with its newline (the last may have none).
fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= block.len() {
            return None;
        }
        let stop = memchr::memchr(b'\n', &block[start..]).map_or(block.len(), |i| start + i + 1);
        let line = &block[start..stop];
        start = stop;
        Some(line)
    })
}
