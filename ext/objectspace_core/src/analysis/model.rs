//! Data the analyses share: the steps of a retention path and a site's paths.
//!
//! Plain serialisable types; this module imports none of its siblings, so
//! that the report rows ([`super::report`]), the path search ([`super::paths`])
//! and the analyses that fill them can all use it without importing each other.

use serde::Serialize;

/// One step of a retention path: a root, an object of the dump, or a holder
/// outside the dump. Fields the dump does not give are `null`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// `0x...` for objects; `null` for roots and holders outside the dump.
    pub address: Option<String>,
    /// The object's type; "ROOT" for a root, "OUTSIDE" for a holder missing
    /// from the dump, "ELIDED" for the middle of a long path.
    #[serde(rename = "type")]
    pub ty: String,
    /// The object's class name, when the dump names it.
    pub class: Option<String>,
    /// The name of a CLASS or MODULE record, or a root's category.
    pub name: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub memsize: Option<u64>,
    /// The holder is not in the dump (a retained dump, or an object the dump lacks).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outside_dump: bool,
    /// On the path's holder step: how many of the traced objects it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<u64>,
    /// On an "ELIDED" step: how many steps it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elided: Option<u64>,
    /// The holder that matters: the last step, from the root, before the
    /// first object of a growing site (the leak's own objects and their
    /// containers); set by [`super::findings`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leak_holder: bool,
}

/// A step as told apart from others of the same kind: its type, class,
/// name, file and line, without what differs from one object to the next
/// (address, memsize, counts).
pub type StepShape = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<u32>,
);

/// True for the types of a class or module record: the named holders a
/// path stops at.
pub fn is_namespace(ty: &str) -> bool {
    ty == "CLASS" || ty == "MODULE"
}

impl Step {
    /// What makes two chains the same (see [`StepShape`]).
    pub fn shape(&self) -> StepShape {
        (
            self.ty.clone(),
            self.class.clone(),
            self.name.clone(),
            self.file.clone(),
            self.line,
        )
    }

    /// A step with only a type and a name (a root, the outside, an elided run).
    pub fn bare(ty: &str, name: Option<String>) -> Step {
        Step {
            address: None,
            ty: ty.to_string(),
            class: None,
            name,
            file: None,
            line: None,
            memsize: None,
            outside_dump: false,
            holds: None,
            elided: None,
            leak_holder: false,
        }
    }
}

/// The paths of one site, for its report row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeldBy {
    /// One path per holder, most objects first: a root (or outside) step,
    /// then objects, the last one an object of the site.
    pub held_by: Vec<Vec<Step>>,
    /// Objects of the site traced (a sample of at most [`super::paths::SAMPLE`]).
    pub held_by_sampled: u64,
    /// The dump the paths come from.
    pub held_by_dump: String,
}
