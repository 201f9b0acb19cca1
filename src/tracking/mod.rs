//! Call tracking: which tracking number was dialed and which visit or
//! channel it belongs to (SPEC section 3).

pub mod fields;
pub mod filter;
pub mod pools;
pub mod router;

pub use fields::VisitFields;
pub use router::TrackingRouter;

/// Fields a visit may carry besides `visit_id` (SPEC T-1): what the visits
/// API accepts and what rewrite templates may name.
pub const VISIT_FIELDS: &[&str] = &[
    "marker",
    "source",
    "city",
    "domain",
    "page",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];
